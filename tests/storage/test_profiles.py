"""Profiles (issue 5): PINs as salted slow hashes, one admin, conversations and usage that belong
to a profile, admin-only changes, through the core and the CLI."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from app.chat.service import ChatService
from app.config.pseudonym import provider_user
from app.config.settings import Settings, default_user_id
from app.domain.errors import UsageError
from app.domain.messages import Role
from app.storage.ledger import UsageLedger
from app.storage.profiles import (
    FREE_TRIES,
    NotAllowed,
    Profile,
    ProfileError,
    Profiles,
    WrongPin,
    hash_pin,
    pin_matches,
)
from app.storage.quotas import QuotaBook
from app.storage.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "outpost.db")
    yield s
    s.close()


def test_a_pin_is_stored_as_a_salted_scrypt_hash_never_as_text(store):
    profiles = Profiles(store)
    admin = profiles.ensure_default("ana")
    profiles.add("bo", admin, pin="4711")
    profiles.add("cy", admin, pin="4711")
    rows = {r["name"]: r for r in store.db["profiles"].rows}
    assert "4711" not in json.dumps(rows)
    bo, cy = rows["bo"]["pin_hash"], rows["cy"]["pin_hash"]
    assert bo.startswith("scrypt$16384$8$1$") and bo != cy  # same PIN, different salts
    assert pin_matches("4711", bo) and not pin_matches("4712", bo)
    assert not pin_matches("4711", "md5$whatever")
    assert hash_pin("4711", salt=b"s" * 16) == hash_pin("4711", salt=b"s" * 16)


def test_the_default_profile_is_the_admin_and_claims_old_conversations(store):
    old = store.create_conversation("from before profiles")
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    assert ana.is_admin and not ana.has_pin
    assert store.get_conversation(old.id).profile == "ana"
    # another OS user on the same data is not made a profile (nor a second admin): only a
    # machine with no profile at all gets its default one made
    assert profiles.ensure_default("bo") is None
    assert [(p.name, p.is_admin) for p in profiles.list()] == [("ana", True)]


def test_sign_in_checks_the_pin_and_locks_after_repeated_wrong_pins(store):
    now = [dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)]
    profiles = Profiles(store, clock=lambda: now[0])
    admin = profiles.ensure_default("ana")
    profiles.add("bo", admin, pin="2468")
    with pytest.raises(WrongPin, match="has a PIN"):
        profiles.sign_in("bo", None)
    assert profiles.sign_in("BO", "2468").name == "bo"  # names are case-insensitive
    for _ in range(FREE_TRIES - 1):
        with pytest.raises(WrongPin, match="^Wrong PIN for bo.$"):
            profiles.sign_in("bo", "0000")
    with pytest.raises(WrongPin, match=r"^Wrong PIN for bo: that is 5 wrong PINs in a row, so "
                                       r"bo is locked now; try again in 30 s\.$"):
        profiles.sign_in("bo", "0000")  # it said "after 5 wrong PINs … it is locked for 30 s"
    with pytest.raises(WrongPin, match="try again in 30 s"):
        profiles.sign_in("bo", "2468")  # even the right PIN waits out the lock
    now[0] += dt.timedelta(seconds=31)
    assert profiles.sign_in("bo", "2468").name == "bo"  # and the count starts again
    with pytest.raises(WrongPin, match="^Wrong PIN"):
        profiles.sign_in("bo", "0000")


def test_only_the_admin_adds_removes_resets_and_hands_on_the_role(store):
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    bo = profiles.add("bo", ana, pin="1357")
    with pytest.raises(NotAllowed, match=r"Only the admin \(ana\) can add profiles"):
        profiles.add("eve", bo)
    with pytest.raises(NotAllowed):
        profiles.set_pin("ana", "9999", bo)
    with pytest.raises(NotAllowed):
        profiles.make_admin("bo", bo)
    profiles.set_pin("bo", "2222", bo)  # your own PIN: yes
    profiles.set_pin("bo", "3333", ana)  # the admin resets a forgotten one
    assert profiles.sign_in("bo", "3333")
    with pytest.raises(ProfileError, match="already a profile named 'bo'"):
        profiles.add("Bo", ana)
    with pytest.raises(ProfileError, match="not a usable profile name"):
        profiles.add("../etc", ana)
    with pytest.raises(ProfileError, match="4 to 64"):
        profiles.add("cy", ana, pin="12")
    assert profiles.make_admin("bo", ana).is_admin
    assert [p.name for p in profiles.list() if p.is_admin] == ["bo"]
    with pytest.raises(NotAllowed):  # ana's old Profile object carries no power
        profiles.add("eve", ana)
    with pytest.raises(ProfileError, match="is the admin"):
        profiles.remove("bo", profiles.get("bo"))


def test_removing_a_profile_with_conversations_needs_consent(store):
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    profiles.add("bo", ana)
    kept = store.create_conversation("bo's", profile="bo")
    store.add_message(kept.id, Role.USER, "hello")
    with pytest.raises(ProfileError, match="has 1 conversation"):
        profiles.remove("bo", ana)
    assert store.messages(kept.id)  # nothing lost
    assert profiles.remove("bo", ana, delete_conversations=True) == 1
    assert profiles.find("bo") is None and store.list_conversations() == []


@pytest.mark.local_model
def test_conversations_and_usage_belong_to_the_profile(store, bundled_model):
    import threading

    from engines.llama_local import LocalEngine

    settings = Settings(store.path.parent / "settings.json")
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    profiles.add("bo", ana)
    service = ChatService(store, settings)
    service.ledger = UsageLedger(store, "ana")
    engine = LocalEngine(bundled_model, on_attempt=service.ledger.record)
    try:
        service.profile = "ana"
        turn = service.start_turn("Hi", model="local", options=_short())
        list(turn.run(engine, threading.Event()))
        # bo signs in on the same window: the ledger's default follows, the turn's owner wins
        service.profile = service.ledger.profile = "bo"
        assert [c.title for c in store.list_conversations("bo")] == []
        # bo is not the admin: told what an id that names nothing gets (trial 10)
        with pytest.raises(UsageError, match="There is no conversation with id"):
            service.start_turn("Me too", turn.conversation_id, model="local")
        assert len(store.messages(turn.conversation_id)) == 2  # nothing written for bo
        theirs = service.start_turn("Zanzibar", model="local", options=_short())
        list(theirs.run(engine, threading.Event()))
        engine.call_on_model_thread(lambda llm: None)  # the records are written after replies
    finally:
        engine.close()
    assert [c.id for c in store.list_conversations("ana")] == [turn.conversation_id]
    assert [c.id for c in store.list_conversations("bo")] == [theirs.conversation_id]
    rows = store.request_log()
    assert {(r["profile"], r["conversation_id"]) for r in rows} == {
        ("ana", turn.conversation_id), ("bo", theirs.conversation_id)}
    assert theirs.request.user == provider_user("bo")
    assert store.search("Zanzibar", profile="ana") == []
    assert "Zanzibar" in [m.content for m in store.search("Zanzibar", profile="bo")]


def _short():
    from app.chat.service import TurnOptions

    return TurnOptions(max_tokens=4, temperature=0.0)


def test_quotas_are_changed_by_the_admin_only(tmp_path):
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    with pytest.raises(NotAllowed, match="Only the admin can change quotas"):
        book.set("bo", "cloud_tokens_per_day", 10**9, by=Profile("bo"))
    book.set("bo", "cloud_tokens_per_day", 100, by=Profile("ana", is_admin=True))
    assert book.limits("bo").cloud_tokens_per_day == 100
    (tmp_path / "policy.toml").write_text("[profiles.bo]\nrequests_per_minute = 3\n")
    assert book.policy_names("bo") == {"requests_per_minute"}
    assert book.policy_names("ana") == set()


# -- the CLI ---------------------------------------------------------------------------------
def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OUTPOST_PIN", "OUTPOST_PROFILE", "OUTPOST_NEW_PIN")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=environment, stdin=subprocess.DEVNULL, timeout=120)


def test_cli_profiles_pins_and_admin_rights(outpost_home):
    me = json.loads(cli("profile", "list", "--json").stdout)
    assert len(me) == 1 and me[0]["admin"] and me[0]["signed_in"]
    assert cli("profile", "add", "maria", "--pin", OUTPOST_NEW_PIN="8642").returncode == 0
    refused = cli("--as", "maria", "profile", "whoami")
    assert refused.returncode == 2 and "has a PIN: set OUTPOST_PIN" in refused.stderr
    wrong = cli("--as", "maria", "profile", "whoami", OUTPOST_PIN="1111")
    assert wrong.returncode == 2 and "Wrong PIN for maria" in wrong.stderr
    who = cli("profile", "whoami", OUTPOST_PROFILE="maria", OUTPOST_PIN="8642")
    assert who.returncode == 0 and who.stdout.startswith("maria (not admin; PIN set)")
    as_maria = dict(OUTPOST_PROFILE="maria", OUTPOST_PIN="8642")
    denied = cli("quota", "set", "cloud_tokens_per_day", "999999", **as_maria)
    assert denied.returncode == 2 and "Only the admin can change quotas" in denied.stderr
    assert cli("profile", "add", "eve", **as_maria).returncode == 2
    assert cli("usage", "--profile", "all", **as_maria).returncode == 2
    assert cli("quota", "set", "cloud_tokens_per_day", "500", "--profile", "maria"
               ).returncode == 0
    shown = json.loads(cli("quota", "show", "--json", **as_maria).stdout)
    assert shown["profile"] == "maria" and shown["cloud_tokens_per_day"] == 500
    # maria changes her own PIN; the old one stops working
    assert cli("profile", "pin", OUTPOST_NEW_PIN="97531", **as_maria).returncode == 0
    assert cli("profile", "whoami", **as_maria).returncode == 2
    assert cli("profile", "admin", "maria").returncode == 0
    listed = {p["name"]: p for p in json.loads(cli("profile", "list", "--json").stdout)}
    assert listed["maria"]["admin"] and not any(p["admin"] for n, p in listed.items()
                                                 if n != "maria")


@pytest.mark.local_model
def test_cli_history_and_usage_are_per_profile(outpost_home):
    assert cli("profile", "add", "maria").returncode == 0
    # a word the model cannot write by chance in root's conversation, so search proves who sees what
    assert cli("--as", "maria", "ask", "Hello Kumquat", "--max-tokens", "3").returncode == 0
    assert cli("ask", "Good morning", "--max-tokens", "3").returncode == 0
    mine = json.loads(cli("history", "list", "--json").stdout)
    hers = json.loads(cli("--as", "maria", "history", "list", "--json").stdout)
    assert [c["title"] for c in mine] == ["Good morning"]
    assert [c["title"] for c in hers] == ["Hello Kumquat"]
    peek = cli("history", "show", hers[0]["id"])
    assert peek.returncode == 2 and "belongs to another profile" in peek.stderr
    cont = cli("ask", "and more", "--conversation", hers[0]["id"])
    assert cont.returncode == 2 and "belongs to another profile" in cont.stderr
    assert json.loads(cli("history", "search", "Kumquat", "--json").stdout) == []
    found = json.loads(cli("--as", "maria", "history", "search", "Kumquat", "--json").stdout)
    assert {m["conversation_id"] for m in found} == {hers[0]["id"]}
    usage = json.loads(cli("usage", "--profile", "maria", "--json").stdout)
    everyone = json.loads(cli("usage", "--profile", "all", "--json").stdout)
    assert usage["requests"] == 1 and everyone["requests"] == 2


def test_the_outbox_lists_only_the_profiles_own_queued_messages(store):
    from app.domain.messages import ChatMessage, ChatRequest
    from app.storage.outbox import Outbox

    profiles = Profiles(store)
    profiles.ensure_default("ana")
    outbox = Outbox(store)
    for owner in ("ana", "bo"):
        conversation = store.create_conversation(f"{owner}'s", profile=owner)
        message = store.add_message(conversation.id, Role.USER, f"from {owner}")
        request = ChatRequest(model="m", messages=(ChatMessage(Role.USER, f"from {owner}"),))
        outbox.enqueue(conversation.id, message.id, "openai", "m", request)
    assert [i.prompt for i in outbox.pending("bo")] == ["from bo"]
    assert [i.prompt for i in outbox.items(profile="ana")] == ["from ana"]
    assert len(outbox.pending()) == 2  # the sender serves everyone's


def test_profiles_with_no_admin_get_the_default_one_as_admin(store):
    """A database started over whose admin could not be read back has profiles but no admin:
    the machine's default profile becomes it at the next start (there is always one)."""
    store.db["profiles"].insert({"name": "ana", "is_admin": 0, "created_at": "t"})
    store.db["profiles"].insert({"name": "bo", "is_admin": 0, "created_at": "t"})
    assert Profiles(store).ensure_default("ana").is_admin
    admins = store.db.execute("select name from profiles where is_admin = 1").fetchall()
    assert admins == [("ana",)]


def test_quota_show_names_the_policy_file_only_when_there_is_one(outpost_home):
    """It named a policy file that did not exist as if it were in force."""
    shown = cli("quota", "show")
    assert shown.returncode == 0, shown.stderr
    assert "no policy file; one at" in shown.stdout.splitlines()[0]
    (outpost_home / "config" / "policy.toml").write_text("[default]\nrequests_per_minute = 5\n")
    first = cli("quota", "show").stdout.splitlines()[0]
    assert first.endswith("policy.toml):") and "no policy file" not in first


def test_a_removed_profiles_quotas_and_usage_do_not_pass_to_a_new_one_of_its_name(store):
    """A new carol was refused by the removed carol's monthly budget: her quotas.json entries
    and her ledger rows passed to whoever took the name next. Removing a profile now removes
    its quotas and files its usage under a name no profile can take; the machine's totals
    stay as they were."""
    from app.storage.ledger import UsageLedger
    from app.storage.quotas import QuotaExceeded, QuotaGuard
    from engines.http_policy import AttemptRecord

    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    book = QuotaBook()  # the config folder's, as the CLI and the window use
    profiles = Profiles(store, clock=lambda: now)
    ana = profiles.ensure_default("ana")
    profiles.add("carol", ana)
    book.set("carol", "cloud_cost_per_month", 1.0, by=ana)
    book.set("ana", "requests_per_minute", 5, by=ana)
    for who in ("carol", "carol", "ana"):
        store.log_attempt(AttemptRecord(1, 200, 5.0, None, provider="openai", model="m",
                                        prompt_tokens=100, completion_tokens=50),
                          profile=who, cost_usd=2.0)
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)
    since = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    everyone = ledger.totals(since)
    with pytest.raises(QuotaExceeded, match="Monthly cloud budget reached for carol"):
        guard.check("carol", "auto", True, 10, 10)

    profiles.remove("carol", ana)
    assert "carol" not in json.loads(book.local.read_text())["profiles"]
    assert book.limits("ana").requests_per_minute == 5  # the others' quotas stay
    assert ledger.totals(since).as_dict() == everyone.as_dict()  # `usage --profile all`
    label = f"carol (removed {now.astimezone().date().isoformat()})"
    assert sorted(r["profile"] for r in store.request_log()) == ["ana", label, label]
    with pytest.raises(ProfileError, match="not a usable profile name"):
        profiles.add(label, ana)  # the name the old rows are filed under is nobody's

    profiles.add("Carol", ana)  # a new person of the same name starts afresh
    assert book.limits("Carol").cloud_cost_per_month is None
    assert ledger.totals(since, "Carol").requests == 0
    guard.check("Carol", "auto", True, 10, 10)


def test_a_new_profile_does_not_take_over_what_an_older_outpost_left_under_its_name(store):
    """A profile removed before removal re-filed its usage left its quotas and ledger rows
    under its name: a profile added with that name now starts without them."""
    from app.storage.ledger import UsageLedger
    from engines.http_policy import AttemptRecord

    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    book = QuotaBook()
    profiles = Profiles(store, clock=lambda: now)
    ana = profiles.ensure_default("ana")
    profiles.add("carol", ana)
    book.set("carol", "cloud_cost_per_month", 1.0, by=ana)
    store.log_attempt(AttemptRecord(1, 200, 5.0, None, provider="openai", model="m",
                                    prompt_tokens=100, completion_tokens=50),
                      profile="carol", cost_usd=2.0)
    store.db.execute("delete from profiles where name = 'carol'")  # as an older Outpost did
    store.db.conn.commit()
    ledger = UsageLedger(store, "ana")
    since = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    everyone = ledger.totals(since).as_dict()
    profiles.add("carol", ana)
    assert book.limits("carol").cloud_cost_per_month is None
    assert ledger.totals(since, "carol").requests == 0
    assert ledger.totals(since).as_dict() == everyone
    assert [r["profile"] for r in store.request_log()] == [
        f"carol (removed {now.astimezone().date().isoformat()})"]


def test_a_removed_default_profile_stays_removed(store):
    """The OS user's profile came back at every start, without its PIN, after the admin had
    removed it: it is made only on a machine with no profile at all."""
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    profiles.set_pin("ana", "1234", ana)
    bo = profiles.make_admin(profiles.add("bo", ana).name, ana)
    profiles.remove("ana", bo)
    assert profiles.ensure_default("ana") is None
    assert [p.name for p in profiles.list()] == ["bo"]
    old = store.create_conversation("from before profiles")  # (a restore, an old import)
    assert profiles.ensure_default("ana") is None
    assert store.get_conversation(old.id).profile == "bo"  # the admin's, not nobody's


def test_profiles_with_no_admin_and_no_default_get_the_default_made_as_admin(store):
    """The repair that keeps an admin: a database started over whose admin could not be read
    back, and the default not among the profiles read back."""
    store.db["profiles"].insert({"name": "bo", "is_admin": 0, "created_at": "t"})
    ana = Profiles(store).ensure_default("ana")
    assert ana is not None and ana.is_admin
    admins = store.db.execute("select name from profiles where is_admin = 1").fetchall()
    assert admins == [("ana",)]


def test_cli_says_which_profile_to_use_when_the_default_one_was_removed(outpost_home):
    me = default_user_id(Settings())
    assert cli("profile", "add", "carol").returncode == 0
    assert cli("profile", "admin", "carol").returncode == 0
    assert cli("--as", "carol", "profile", "remove", me).returncode == 0
    who = cli("profile", "whoami")
    assert who.returncode == 2
    assert f"There is no profile named {me!r}" in who.stderr
    assert "--as NAME or OUTPOST_PROFILE=NAME" in who.stderr and "carol" in who.stderr
    listed = json.loads(cli("--as", "carol", "profile", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["carol"]  # not made again
    assert cli("profile", "whoami", OUTPOST_PROFILE="carol").returncode == 0


def test_all_is_not_a_profile_name(store):
    """A profile named all could not be told from everyone in `outpost usage --profile all`."""
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    for name in ("all", "ALL", " All "):
        with pytest.raises(ProfileError, match=r"^'all' cannot name a profile: `outpost usage "
                                               r"--profile all` means every profile"):
            profiles.add(name, ana)
    assert profiles.add("all staff", ana).name == "all staff"  # only the word itself


def test_cli_refuses_a_profile_named_all(outpost_home):
    added = cli("profile", "add", "all")
    assert added.returncode == 2 and "'all' cannot name a profile" in added.stderr
