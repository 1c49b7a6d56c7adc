"""Helpers shared by the ``outpost`` subcommands: JSON output, opening the core, engines."""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys
from dataclasses import dataclass

from app.compose import CommandEngines, build_service
from app.config import paths
from app.config.settings import Settings, default_user_id
from app.domain.errors import DatabaseDamaged, UsageError
from app.storage.profiles import ProfileError, Profiles, check_new_pin
from app.storage.short_ids import expand
from app.storage.store import Store


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()

def emit_list(rows: list[dict]) -> None:
    sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")

@dataclass
class Core:
    settings: object
    store: object
    service: object  # app.chat.service.ChatService, acting as ``profile``
    profile: object  # app.storage.profiles.Profile: who is signed in
    profiles: object  # app.storage.profiles.Profiles


def open_core(args=None) -> Core:
    """Settings, store, services, signed in as ``--as NAME`` / $OUTPOST_PROFILE / the machine's
    default profile (a profile with a PIN needs $OUTPOST_PIN or a PIN typed at the terminal)."""
    settings = Settings()
    for warning in settings.load_warnings:
        sys.stderr.write(f"outpost: warning: {warning}\n")
    store = Store()
    for note in store.notes:  # e.g. a leftover write-ahead log copied aside
        sys.stderr.write(f"outpost: warning: {note}\n")
    try:
        profiles = Profiles(store)
        profile = _sign_in(args, profiles, settings)
    except BaseException:
        store.close()
        raise
    try:
        _expand_ids(args, store, profile.name)
    except BaseException:
        store.close()
        raise
    service = build_service(store, settings, profile.name)
    # replies a dead process left streaming: marked, and told by the window's next start
    store.recover_orphaned_streaming()
    return Core(settings, store, service, profile, profiles)


def _sign_in(args, profiles: Profiles, settings: Settings):
    """The profile acting: ``--as NAME``, $OUTPOST_PROFILE, else the machine's default, its
    PIN checked."""
    name = default_user_id(settings)
    default = profiles.ensure_default(name)
    wanted = getattr(args, "as_profile", None) or os.environ.get("OUTPOST_PROFILE") \
        or (default.name if default else None)
    if wanted is None:  # the machine's default profile was removed: not made again
        known = ", ".join(p.name for p in profiles.list())
        raise ProfileError(f"There is no profile named {name!r} (this computer's default "
                           "profile: the user_id setting, else your login name); use "
                           f"--as NAME or OUTPOST_PROFILE=NAME with one of: {known}.")
    return profiles.sign_in(wanted, _pin_for(profiles.get(wanted)))


def require_admin(args, doing: str, *, unless_damaged: bool = False) -> None:
    """Refuse (``NotAllowed``, exit 2) unless the profile acting is the admin: for changes to
    what every profile on this machine shares (its providers, their API keys, the database
    as a whole: a restore, a salvage). ``unless_damaged``: a database that is damaged (or not
    there) cannot say who its admin is, so anyone may go on (a restore is how it is mended;
    the window offers one at start, before anyone signs in); and the day's backup is not
    taken, so that ``backup restore`` still finds the newest backup it was asked for."""
    settings = Settings()
    if unless_damaged and not paths.database_path().exists():
        return
    try:
        store = Store(daily_backup=not unless_damaged)
    except DatabaseDamaged:
        if unless_damaged:
            return
        raise
    try:
        profiles = Profiles(store)
        profiles.require_admin(_sign_in(args, profiles, settings), doing)
    finally:
        store.close()


# the arguments that name a conversation or a message by id (an outbox item's id is a number)
_ID_ARGUMENTS = {"conversation": "conversation", "ids": "conversation", "message": "message",
                 "reply_to": "message"}


def _expand_ids(args, store: Store, profile: str) -> None:
    """Ids given by their first characters made whole (``app.storage.short_ids``); ``history
    show ID`` and ``history delete ID`` name a conversation."""
    names = dict(_ID_ARGUMENTS)
    if getattr(args, "history_command", None) in ("show", "delete"):
        names["id"] = "conversation"
    for name, kind in names.items():
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, expand(store, kind, value, profile))
        elif isinstance(value, list):
            setattr(args, name, [expand(store, kind, v, profile) if isinstance(v, str) else v
                                 for v in value])


def _pin_for(profile) -> str | None:
    if not profile.has_pin:
        return None
    if os.environ.get("OUTPOST_PIN") is not None:
        return os.environ["OUTPOST_PIN"]
    if not sys.stdin.isatty():
        raise ProfileError(f"The profile {profile.name} has a PIN: set OUTPOST_PIN, or run "
                           "the command in a terminal to type it.")

    return getpass.getpass(f"PIN for {profile.name}: ")


def read_new_pin(name: str) -> str:
    """A new PIN: $OUTPOST_NEW_PIN, or typed twice at the terminal."""
    if os.environ.get("OUTPOST_NEW_PIN") is not None:
        return check_new_pin(os.environ["OUTPOST_NEW_PIN"])
    if not sys.stdin.isatty():
        raise ProfileError("Set OUTPOST_NEW_PIN, or run the command in a terminal to type the "
                           "new PIN.")

    pin = check_new_pin(getpass.getpass(f"New PIN for {name}: "))
    if getpass.getpass("Again: ") != pin:
        raise ProfileError("The two PINs differ; nothing was changed.")
    return pin


def read_prompt(value: str) -> str:
    """The prompt argument, or with ``-`` stdin, read as bytes and decoded as UTF-8 (whatever
    the locale says), so undecodable input is refused in one sentence."""
    if value != "-":
        return value
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream put in place of stdin (tests, an embedding program)
        return sys.stdin.read()
    data = raw.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"The prompt read from stdin is not valid UTF-8 text (byte "
                         f"0x{data[exc.start]:02x} at offset {exc.start:,}); convert it "
                         "first, e.g. with iconv.") from None

def round_or_none(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None

def local_time(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")

def cloud_engine(name: str, model: str | None, on_attempt):
    """A cloud engine for one command (its caller closes it)."""
    return CommandEngines(Settings(), on_attempt).cloud(name, model)
