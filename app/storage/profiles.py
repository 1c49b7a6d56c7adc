"""Profiles: the people who share one machine (a field laptop passed between staff).

* The machine's **default profile** is the OS user (or the ``user_id`` setting). It is created
  on first use (on a machine with no profile at all: once removed, it stays removed), is the
  **admin**, and claims conversations from before profiles existed.
* Exactly one profile is the admin (a unique index enforces it); the admin adds and removes
  profiles, resets PINs, hands the admin role on and edits quotas (``app.storage.quotas``). Everyone
  else may only change their own PIN.
* A **PIN** is optional. It is stored as a salted slow hash (scrypt, N=2^14, r=8, p=1, 16-byte
  random salt), never as text, and compared in constant time. Five wrong PINs in a row lock the
  profile for 30 s, doubling with every further wrong PIN (at most an hour).
* Conversations and usage belong to a profile: the window and the CLI list, search and continue
  only the signed-in profile's conversations, and its quotas apply to its requests.
* Removing a profile removes its quotas (``config/quotas.json``) and files its usage (the
  ``request_log`` rows) under ``NAME (removed YYYY-MM-DD)``, a name no profile can take
  (``app.domain.profile_names``): the machine's totals stay whole, and a later profile of the
  same name starts with no limits and no usage of the one before.

What profiles are not: encryption. They share one OS account and one database file, so anyone
who can read that file can read every profile's history; a PIN keeps people out of each other's
profile *in Outpost*, and fleets enforce limits with the policy file (``app.storage.quotas``).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from app.domain.errors import NotAllowed, ProfileError, UsageError, WrongPin
from app.domain.profile_names import check_name, removed_label
from app.domain.wording import counted
from app.storage import deletions
from app.storage.quotas import QuotaBook
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store, now_iso

__all__ = ["NotAllowed", "Profile", "ProfileError", "Profiles", "WrongPin", "check_name",
           "check_new_pin", "hash_pin", "is_admin", "not_theirs", "pin_matches"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
PIN_MIN, PIN_MAX = 4, 64
FREE_TRIES = 5
LOCK_S, LOCK_MAX_S = 30, 3600


@dataclass(frozen=True)
class Profile:
    name: str
    is_admin: bool = False
    has_pin: bool = False
    created_at: str = ""


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def pin_matches(pin: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode("utf-8"), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_new_pin(pin: str) -> str:
    if not isinstance(pin, str) or not PIN_MIN <= len(pin) <= PIN_MAX:
        raise ProfileError(f"A PIN must be {PIN_MIN} to {PIN_MAX} characters long.")
    if pin != pin.strip():
        raise ProfileError("A PIN cannot start or end with a space.")
    return pin


def _row(row: dict) -> Profile:
    return Profile(row["name"], bool(row["is_admin"]), bool(row["pin_hash"]), row["created_at"])


class Profiles:
    """Reads and changes profiles. ``actor`` is the signed-in profile doing the change.
    ``quotas``: where their quotas are kept (default: the config folder's quota book)."""

    def __init__(self, store: Store, clock=lambda: dt.datetime.now(dt.timezone.utc),
                 quotas: QuotaBook | None = None):
        self.store = store
        self.clock = clock
        self.quotas = quotas or QuotaBook()

    # -- reading -----------------------------------------------------------------------------
    def list(self) -> list[Profile]:
        with storage_errors(self.store.path):
            return [_row(r) for r in self.store.db["profiles"].rows_where(order_by="name")]

    def find(self, name: str) -> Profile | None:
        with storage_errors(self.store.path):
            rows = list(self.store.db["profiles"].rows_where("name = ? collate nocase",
                                                             [name.strip()]))
        return _row(rows[0]) if rows else None

    def get(self, name: str) -> Profile:
        found = self.find(name)
        if found is None:
            known = ", ".join(p.name for p in self.list()) or "none"
            raise ProfileError(f"There is no profile named {name!r} (profiles: {known}).")
        return found

    def conversation_count(self, name: str) -> int:
        with storage_errors(self.store.path):
            return self.store.db.execute("select count(*) from conversations where profile = ?",
                                         [name]).fetchone()[0]

    # -- the default profile -----------------------------------------------------------------
    def ensure_default(self, name: str) -> Profile | None:
        """The machine's default profile (the OS user, or the ``user_id`` setting), or None
        when there are profiles and none has this name (it was removed, or they were made
        under other names): it is made only on a machine with no profile at all, as the
        admin, so removing it sticks (made again at each start, it came back without its
        PIN). Two repairs keep the data whole: conversations from before profiles existed are
        claimed by it (by the admin when it does not exist), and a machine whose profiles have
        no admin (a database started over, whose admin could not be read back) gets it as the
        admin, made for that when it is missing: there is always exactly one."""
        name = check_name(name)
        with storage_errors(self.store.path):  # every start comes here: write only if needed
            db = self.store.db
            settled = db.execute("select 1 from profiles where is_admin = 1").fetchone() \
                and not db.execute("select 1 from conversations where profile is null "
                                   "limit 1").fetchone()
        if not settled:
            with self.store.transaction() as db:
                admin = db.execute("select name from profiles where is_admin = 1").fetchone()
                exists = db.execute("select name from profiles where name = ? collate nocase",
                                    [name]).fetchone()
                if admin is None and exists is None:  # no profile at all, or no admin
                    db["profiles"].insert({"name": name, "is_admin": 1,
                                           "created_at": now_iso()})
                elif admin is None:
                    db.execute("update profiles set is_admin = 1 where name = ?", [exists[0]])
                owner = exists[0] if exists else name if admin is None else admin[0]
                db.execute("update conversations set profile = ? where profile is null",
                           [owner])
        return self.find(name)

    # -- signing in --------------------------------------------------------------------------
    def sign_in(self, name: str, pin: str | None) -> Profile:
        """The profile, when it has no PIN or ``pin`` is right. Raises WrongPin (with how long
        the profile stays locked after too many wrong PINs)."""
        profile = self.get(name)
        if not profile.has_pin:
            return profile
        with storage_errors(self.store.path):
            row = self.store.db["profiles"].get(profile.name)
        now = self.clock()
        if row["locked_until"] and dt.datetime.fromisoformat(row["locked_until"]) > now:
            wait = (dt.datetime.fromisoformat(row["locked_until"]) - now).total_seconds()
            raise WrongPin(f"Too many wrong PINs for {profile.name}: try again in "
                           f"{max(1, round(wait))} s.")
        if pin is None:
            raise WrongPin(f"The profile {profile.name} has a PIN; enter it to sign in.")
        if pin_matches(pin, row["pin_hash"]):
            with self.store.transaction() as db:
                db["profiles"].update(profile.name, {"failed_pins": 0, "locked_until": None})
            return profile
        failed = (row["failed_pins"] or 0) + 1
        seconds = min(LOCK_MAX_S, LOCK_S * 2 ** (failed - FREE_TRIES)) \
            if failed >= FREE_TRIES else 0
        lock = (now + dt.timedelta(seconds=seconds)).isoformat() if seconds else None
        with self.store.transaction() as db:
            db["profiles"].update(profile.name, {"failed_pins": failed, "locked_until": lock})
        if lock:  # this PIN locked it: say so now, not as what would happen
            raise WrongPin(f"Wrong PIN for {profile.name}: that is {failed} wrong PINs in a "
                           f"row, so {profile.name} is locked now; try again in {seconds} s.")
        raise WrongPin(f"Wrong PIN for {profile.name}.")

    # -- changes (admin, or yourself for your PIN) -------------------------------------------
    def _require_admin(self, actor: Profile, doing: str) -> None:
        current = self.get(actor.name)  # the database's word, not a stale object's
        if not current.is_admin:
            admin = next((p.name for p in self.list() if p.is_admin), "the admin")
            raise NotAllowed(f"Only the admin ({admin}) can {doing}; you are signed in as "
                             f"{actor.name}.")

    def require_admin(self, actor: Profile, doing: str) -> None:
        """``NotAllowed`` unless ``actor`` is the admin now: for what every profile shares
        (providers, their keys), as for the profiles themselves."""
        self._require_admin(actor, doing)

    def add(self, name: str, actor: Profile, pin: str | None = None) -> Profile:
        self._require_admin(actor, "add profiles")
        name = check_name(name)
        row = {"name": name, "is_admin": 0, "created_at": now_iso(),
               "pin_hash": hash_pin(check_new_pin(pin)) if pin is not None else None}
        with self.store.transaction() as db:
            taken = db.execute("select name from profiles where name = ? collate nocase",
                               [name]).fetchone()
            if taken:
                raise ProfileError(f"There is already a profile named {taken[0]!r}.")
            db["profiles"].insert(row)
            # a profile of this name removed by an older Outpost left its usage and quotas
            # under the name: they are not the new profile's
            self._file_usage_away(db, name)
            self.quotas.forget(name)
        return self.get(name)

    def _file_usage_away(self, db, name: str) -> None:
        """The ledger rows under ``name`` stay in the machine's totals, filed under a name
        that no profile can take (``removed_label``, dated today)."""
        label = removed_label(name, self.clock().astimezone().date())
        db.execute("update request_log set profile = ? where profile = ? collate nocase",
                   [label, name])

    def remove(self, name: str, actor: Profile, delete_conversations: bool = False) -> int:
        """Remove a profile (not the admin). Its conversations (and their outbox items) go with
        it only when asked; otherwise a profile that still has conversations is kept. Its
        quotas go; its ledger rows stay in the machine's totals, filed under
        ``removed_label`` so that a later profile of this name does not inherit its usage.
        Returns how many conversations were deleted."""
        self._require_admin(actor, "remove profiles")
        profile = self.get(name)
        if profile.is_admin:
            raise ProfileError(f"{profile.name} is the admin; hand the admin role to another "
                               "profile first.")
        count = self.conversation_count(profile.name)
        if count and not delete_conversations:
            raise ProfileError(f"{profile.name} has {counted(count, 'conversation')}; remove "
                               "them with the profile only if you mean it "
                               "(--delete-conversations).")
        with self.store.transaction() as db:
            ids = [r[0] for r in db.execute("select id from conversations where profile = ?",
                                            [profile.name]).fetchall()]
            deletions.drop_conversations(db.conn, ids, now_iso())  # with their tombstones
            self._file_usage_away(db, profile.name)
            db["profiles"].delete(profile.name)
            # last: quotas.json that cannot be written rolls the removal back
            self.quotas.forget(profile.name)
        if ids:
            self.store.forgot()
        return len(ids)

    def set_pin(self, name: str, pin: str | None, actor: Profile) -> None:
        """Set (or with None, clear) a PIN: your own, or anyone's as the admin (a forgotten
        PIN is reset by the admin)."""
        profile = self.get(name)
        if profile.name != actor.name:
            self._require_admin(actor, f"change {profile.name}'s PIN")
        value = hash_pin(check_new_pin(pin)) if pin is not None else None
        with self.store.transaction() as db:
            db["profiles"].update(profile.name, {"pin_hash": value, "failed_pins": 0,
                                                 "locked_until": None})

    def admin_without_pin(self, name: str) -> Profile | None:
        """The admin, when ``name`` (not the admin) has a PIN and the admin has none: then
        anyone at this computer can sign in as the admin and clear that PIN (a trial found
        nothing said so); None otherwise."""
        profile = self.get(name)
        admin = next((p for p in self.list() if p.is_admin), None)
        if profile.is_admin or not profile.has_pin or admin is None or admin.has_pin:
            return None
        return admin

    def make_admin(self, name: str, actor: Profile) -> Profile:
        """Hand the admin role to ``name`` (there is always exactly one admin)."""
        self._require_admin(actor, "hand on the admin role")
        profile = self.get(name)
        with self.store.transaction() as db:
            db.execute("update profiles set is_admin = 0 where is_admin = 1")
            db.execute("update profiles set is_admin = 1 where name = ?", [profile.name])
        return self.get(profile.name)

    def owns(self, profile: Profile, conversation) -> bool:
        return conversation.profile in (None, profile.name)

    def check_owner(self, profile: Profile, conversation, message_id: str | None = None,
                    outbox_item: int | None = None) -> None:
        """Refuse ``conversation`` unless ``profile`` may open it (``not_theirs`` says how);
        ``message_id`` / ``outbox_item``: what the user named, in it."""
        if not self.owns(profile, conversation):
            raise not_theirs(conversation.id, profile.is_admin, message_id, outbox_item)


def not_theirs(conversation_id: str, is_admin: bool, message_id: str | None = None,
               outbox_item: int | None = None) -> UsageError:
    """What a profile is told when it names another profile's conversation (or ``message_id``,
    a message in it; ``outbox_item``, an outbox item of it). The admin, who sees every
    profile's counts and removes profiles, is told whose it is; anyone else what an id that
    names nothing gets (``Store.get_conversation``, ``Store.get_message``, ``Outbox.get``; a
    start of another profile's id is not expanded either: ``app.storage.short_ids``), so that
    whether it exists does not leak."""
    if is_admin:
        return NotAllowed(f"The conversation {conversation_id} belongs to another profile.")
    if outbox_item is not None:
        return UsageError(f"There is no outbox item {outbox_item}.")
    if message_id is not None:
        return UsageError(f"There is no message with id {message_id!r}.")
    return UsageError(f"There is no conversation with id {conversation_id!r}.")


def is_admin(store: Store, name: str) -> bool:
    """Whether the profile ``name`` is the admin (False when there is no such profile)."""
    with storage_errors(store.path):
        row = store.db.execute("select is_admin from profiles where name = ? collate nocase",
                               [name.strip()]).fetchone()
    return bool(row and row[0])
