"""Quotas and rate limits (issue 5): a token bucket on a virtual clock, limits from the policy
file over `quota set`, enforcement before anything is sent, in the core and through the CLI."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from app.config.file_schema import ConfigFileInvalid
from app.domain.errors import UsageError
from app.storage.ledger import UsageLedger
from app.storage.profiles import Profile
from app.storage.quotas import QuotaBook, QuotaExceeded, QuotaGuard, RateLimitedLocally, TokenBucket
from app.storage.store import Store
from engines.http_policy import AttemptRecord
from tests.support import Clock

ADMIN = Profile("admin", is_admin=True)


def test_bucket_never_admits_more_than_its_rate_in_any_window():
    clock = Clock()
    rate = 30  # per minute, holding one minute's worth
    bucket = TokenBucket(rate, clock=clock)
    rng = random.Random(7)
    admitted: list[tuple[float, float]] = []
    for _ in range(3000):
        clock.now += rng.expovariate(2.0)  # a greedy caller, ~2 tries a second
        amount = rng.choice([1, 1, 2, 5])
        if bucket.take(amount):
            admitted.append((clock.now, amount))
    assert admitted
    for start, _ in admitted:  # every window that starts at an admission
        for length in (1.0, 10.0, 60.0, 300.0):
            total = sum(a for t, a in admitted if start <= t < start + length)
            assert total <= bucket.capacity + rate * length / 60 + 1e-9


def test_bucket_wait_time_and_refill():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # one per second
    assert bucket.take(60) and not bucket.take(1)
    assert bucket.wait_time(3) == pytest.approx(3.0)
    clock.now += 3
    assert bucket.wait_time(3) == 0 and bucket.take(3)
    assert bucket.wait_time(61) == float("inf")  # more than it can ever hold


def test_bucket_seeded_from_the_past_minute():
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    bucket.seed([(30.0, 5), (6.0, 5)])  # full, -5 at -30 s, +4 by -6 s, -5, +1 since
    assert bucket.level == pytest.approx(10 - 5 + 24 * 10 / 60 - 5 + 6 * 10 / 60)


def write_policy(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_file_wins_and_cannot_be_overridden(tmp_path):
    policy = write_policy(tmp_path / "policy.toml", """
[default]
requests_per_minute = 10
[profiles.ana]
cloud_tokens_per_day = 5000
allowed_routes = ["local", "auto"]
""")
    book = QuotaBook(policy, tmp_path / "quotas.json")
    book.set("ana", "tokens_per_minute", 900, by=ADMIN)
    limits = book.limits("ana")
    assert (limits.requests_per_minute, limits.cloud_tokens_per_day,
            limits.tokens_per_minute) == (10, 5000, 900)
    assert limits.allowed_routes == ("local", "auto") and limits.source == "policy file"
    with pytest.raises(Exception, match="set by the policy file"):
        book.set("ana", "cloud_tokens_per_day", 10**9, by=ADMIN)
    with pytest.raises(Exception, match="set by the policy file"):
        book.set("bo", "requests_per_minute", 1000, by=ADMIN)  # the default applies to everyone
    assert book.limits("bo").cloud_tokens_per_day is None


def test_bad_policy_values_are_named(tmp_path):
    policy = write_policy(tmp_path / "policy.toml", "[default]\nrequests_per_minute = -3\n")
    with pytest.raises(Exception, match="requests_per_minute must be a whole number"):
        QuotaBook(policy, tmp_path / "q.json").limits("x")
    write_policy(policy, "[default]\nbogus = 1\n")
    with pytest.raises(Exception, match="unknown limit 'bogus'"):
        QuotaBook(policy, tmp_path / "q.json").limits("x")


def cloud_attempt(key: str, tokens: int, cost_profile="ana") -> AttemptRecord:
    return AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                         idempotency_key=key, provider="openai", model="m", kind="openai",
                         prompt_tokens=tokens, completion_tokens=0)


def test_daily_cloud_tokens_refused_with_usage_and_reset(tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", 1000, by=ADMIN)
    guard = QuotaGuard(book, ledger)
    guard.check("ana", "auto", True, prompt_tokens=300, max_tokens=100)  # fine
    ledger.record(cloud_attempt("t1", 900))
    with pytest.raises(QuotaExceeded) as info:
        guard.check("ana", "auto", True, prompt_tokens=300, max_tokens=100)
    text = str(info.value)
    assert "900 of 1,000 tokens used today" in text and "resets at 00:00" in text
    guard.check("ana", "local", False, prompt_tokens=300, max_tokens=100)  # local: not counted
    guard.check("bo", "auto", True, prompt_tokens=300, max_tokens=100)  # someone else


def test_routes_and_rate_limits(tmp_path):
    store = Store(tmp_path / "outpost.db")
    clock = Clock()
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "allowed_routes", ["local"], by=ADMIN)
    book.set("bo", "requests_per_minute", 2, by=ADMIN)
    guard = QuotaGuard(book, UsageLedger(store, "x"), clock=clock)
    with pytest.raises(QuotaExceeded, match="may use only these routes: Local only"):
        guard.check("ana", "cloud", True, 10, 10)
    guard.check("bo", "auto", True, 10, 10)
    guard.check("bo", "auto", True, 10, 10)
    with pytest.raises(RateLimitedLocally) as info:
        guard.check("bo", "auto", True, 10, 10)
    assert info.value.wait_s == pytest.approx(30.0)
    clock.now += 30
    guard.check("bo", "auto", True, 10, 10)


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=env or os.environ.copy(), timeout=120)


@pytest.mark.local_model
def test_cli_over_quota_exits_nonzero_sends_nothing_and_saves_nothing(outpost_home):
    assert cli("quota", "set", "count_local", "true").returncode == 0
    half = cli("quota", "set", "requests_per_minute", "1.5")
    assert half.returncode == 2
    assert "requests_per_minute must be a whole number, got '1.5'." in half.stderr
    assert cli("quota", "set", "cloud_tokens_per_day", "10").returncode == 0
    result = cli("ask", "Tell me about the sea, please, in a few words.", "--max-tokens", "5")
    assert result.returncode == 2 and "Daily token quota reached" in result.stderr
    assert json.loads(cli("history", "list", "--json").stdout) == []
    shown = json.loads(cli("quota", "show", "--json").stdout)
    assert shown["cloud_tokens_per_day"] == 10 and shown["source"] == "quota set"
    assert cli("quota", "set", "cloud_tokens_per_day", "none").returncode == 0
    assert cli("ask", "Hi", "--max-tokens", "3").returncode == 0


@pytest.mark.local_model
def test_a_spent_cloud_quota_under_auto_is_answered_locally_and_said(outpost_home):
    """Auto with the profile's daily cloud tokens spent: the local model (which the quota
    does not limit) answers, the reply says why and so does stderr; nothing reaches the
    provider. Cloud only is still refused, and a quota that counts the local model too."""
    from tests.fault_server import fault_server

    with fault_server() as server:
        assert cli("providers", "add", "acme", "--base-url", server.url + "/v1",
                   "--model", "m").returncode == 0
        assert cli("quota", "set", "cloud_tokens_per_day", "10").returncode == 0
        auto = cli("ask", "Tell me about the sea, in a few words.", "--provider", "acme",
                   "--max-tokens", "4", "--json")
        cloud = cli("ask", "Tell me about the sea, in a few words.", "--provider", "acme",
                    "--route", "cloud", "--max-tokens", "4")
        assert server.chat_requests() == []  # nothing was sent to the provider
    assert auto.returncode == 0, auto.stderr
    finished = json.loads(auto.stdout.splitlines()[-1])
    assert finished["engine"] == "local"
    assert finished["route_reason"].startswith("acme: daily token quota reached (")
    assert finished["route_reason"].endswith(": answered locally")
    assert "Daily token quota reached" in auto.stderr
    assert "The local model answers this message." in auto.stderr
    assert "switch this chat to Local only" not in auto.stderr  # it is answered locally
    assert cloud.returncode == 2 and "Daily token quota reached" in cloud.stderr
    assert "The local model is not limited: switch this chat to Local only." in cloud.stderr
    assert cli("quota", "set", "count_local", "true").returncode == 0
    both = cli("ask", "Tell me about the sea.", "--provider", "acme", "--max-tokens", "4")
    assert both.returncode == 2 and "Daily token quota reached" in both.stderr


def test_retries_and_hedges_of_a_turn_are_charged_to_the_rate_buckets(tmp_path):
    store = Store(tmp_path / "outpost.db")
    clock = Clock()
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "requests_per_minute", 3, by=ADMIN)
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger, clock=clock)
    guard.check("ana", "auto", True, 10, 10)
    guard.note_turn("turn-1")
    for _ in range(3):  # its first attempt, then two retries (or a hedge and a retry)
        ledger.record(cloud_attempt("turn-1", 10))
    with pytest.raises(RateLimitedLocally) as info:
        guard.check("ana", "auto", True, 10, 10)  # 3 requests in this minute: wait
    assert info.value.wait_s == pytest.approx(20.0)
    clock.now += 20
    guard.check("ana", "auto", True, 10, 10)
    store.close()


def test_a_cost_budget_refuses_models_with_no_known_price_unless_allowed(tmp_path):
    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_cost_per_month", 5, by=ADMIN)
    guard = QuotaGuard(book, UsageLedger(store, "ana"))
    guard.check("ana", "auto", True, 10, 10, price_known=True, model="gpt-4o-mini")
    with pytest.raises(QuotaExceeded, match="mystery-model has no known price"):
        guard.check("ana", "auto", True, 10, 10, price_known=False, model="mystery-model")
    guard.check("ana", "local", False, 10, 10, price_known=False)  # local costs nothing
    book.set("ana", "allow_unpriced", True, by=ADMIN)
    guard.check("ana", "auto", True, 10, 10, price_known=False, model="mystery-model")
    store.close()


def test_each_limit_says_where_it_comes_from(tmp_path):
    policy = write_policy(tmp_path / "policy.toml", "[default]\nrequests_per_minute = 10\n")
    book = QuotaBook(policy, tmp_path / "quotas.json")
    book.set("ana", "cloud_cost_per_month", 1.5, by=ADMIN)
    limits = book.limits("ana")
    assert limits.sources == {"requests_per_minute": "policy file",
                              "cloud_cost_per_month": "quota set"}


def test_a_named_policy_file_that_is_missing_is_an_error(tmp_path, monkeypatch):
    missing = tmp_path / "fleet-policy.toml"
    monkeypatch.setenv("OUTPOST_POLICY", str(missing))
    with pytest.raises(Exception, match="does not exist"):
        QuotaBook().limits("ana")


def test_a_per_minute_limit_of_0_is_refused_saying_what_to_use_instead(tmp_path):
    """`quota set requests_per_minute 0` was accepted and meant "no limit" (the guard skipped a
    zero rate); a day's tokens of 0 keeps a profile off the cloud, as it says."""
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    for name in ("requests_per_minute", "tokens_per_minute"):
        with pytest.raises(UsageError, match=rf"^{name} must be a whole number from 1 to .*"
                                             "use none to remove the limit.*got 0\\.$"):
            book.set("bo", name, 0, by=ADMIN)
    book.set("bo", "cloud_tokens_per_day", 0, by=ADMIN)  # 0 here: no cloud at all
    assert book.limits("bo").cloud_tokens_per_day == 0
    write_policy(tmp_path / "policy.toml", "[profiles.bo]\ntokens_per_minute = 0\n")
    with pytest.raises(ConfigFileInvalid, match=r"profiles\.bo\.tokens_per_minute must be a "
                                                r"whole number from 1 .* leave the key out"):
        book.limits("bo")


def test_a_per_minute_0_an_older_outpost_saved_reads_as_the_no_limit_it_was(tmp_path):
    """quotas.json written before 0 was refused is read, not refused: its 0 meant no limit."""
    local = tmp_path / "quotas.json"
    local.write_text(json.dumps({"profiles": {"bo": {"requests_per_minute": 0,
                                                     "cloud_tokens_per_day": 0}}}))
    book = QuotaBook(tmp_path / "policy.toml", local)
    limits = book.limits("bo")
    assert (limits.requests_per_minute, limits.cloud_tokens_per_day) == (None, 0)
    book.set("bo", "tokens_per_minute", 50, by=ADMIN)
    assert json.loads(local.read_text())["profiles"]["bo"] == {
        "cloud_tokens_per_day": 0, "tokens_per_minute": 50}


def test_cli_refuses_a_per_minute_limit_of_0(outpost_home):
    zero = cli("quota", "set", "requests_per_minute", "0")
    assert zero.returncode == 2
    assert "use none to remove the limit" in zero.stderr
    shown = json.loads(cli("quota", "show", "--json").stdout)
    assert shown["requests_per_minute"] is None


def test_policy_tables_name_profiles_whatever_their_case(tmp_path):
    """[profiles.Alice] did nothing for the profile alice: names were matched exactly here
    while everywhere else they are matched without regard to case."""
    policy = write_policy(tmp_path / "policy.toml", "[profiles.Alice]\ncloud_tokens_per_day = 5\n")
    local = tmp_path / "quotas.json"
    local.write_text(json.dumps({"profiles": {"BO": {"requests_per_minute": 3}}}))
    book = QuotaBook(policy, local)
    assert book.limits("alice").cloud_tokens_per_day == 5
    assert book.limits("alice").sources == {"cloud_tokens_per_day": "policy file"}
    assert book.policy_names("ALICE") == {"cloud_tokens_per_day"}
    with pytest.raises(UsageError, match="set by the policy file"):
        book.set("alice", "cloud_tokens_per_day", 10, by=ADMIN)
    assert book.limits("bo").requests_per_minute == 3
    book.set("bo", "requests_per_minute", 4, by=ADMIN)  # the table it has, not a second one
    assert json.loads(local.read_text())["profiles"] == {"BO": {"requests_per_minute": 4}}
    write_policy(policy, "[profiles.Alice]\nrequests_per_minute = 1\n"
                         "[profiles.alice]\nrequests_per_minute = 9\n")
    with pytest.raises(ConfigFileInvalid, match=r"profiles\.Alice and profiles\.alice name "
                                                "the same profile"):
        book.limits("alice")


def test_policy_tables_naming_no_profile_are_warned_about(tmp_path):
    policy = write_policy(tmp_path / "policy.toml", "[profiles.Alice]\nrequests_per_minute = 2\n"
                                                    "[profiles.alcie]\nrequests_per_minute = 2\n")
    book = QuotaBook(policy, tmp_path / "quotas.json")
    assert book.policy_warnings(["alice", "ana"]) == [
        f"The policy file {policy} has limits for 'alcie' ([profiles.alcie]), but no profile "
        "here has that name, so they apply to nobody (profiles: alice, ana)."]
    assert book.policy_warnings(["alice", "alcie"]) == []


def test_quota_show_warns_about_policy_tables_naming_no_profile(outpost_home):
    (outpost_home / "config").mkdir(parents=True)
    (outpost_home / "config" / "policy.toml").write_text(
        "[profiles.nobody]\nrequests_per_minute = 2\n")
    shown = cli("quota", "show")
    assert shown.returncode == 0, shown.stderr
    assert "outpost: warning: The policy file" in shown.stderr
    assert "limits for 'nobody' ([profiles.nobody]), but no profile here has that name" \
        in shown.stderr


def test_quota_values_are_shown_as_they_are_typed(outpost_home, capsys):
    """`quota set allowed_routes local` said "['local']", `quota show` "count_local False" and
    a cost "5.0": Python's spelling of what was typed as local, true/false and 5. In process."""
    from app.cli.main import main

    def said(*args: str) -> tuple[int, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out + out.err

    assert said("profile", "add", "ana")[0] == 0
    for name, typed, shown in (("allowed_routes", "local", "local"),
                               ("allowed_routes", '["local", "auto"]', "local,auto"),
                               ("count_local", "yes", "true"),
                               ("cloud_cost_per_month", "5", "5"),
                               ("cloud_cost_per_month", "0.125", "0.125")):
        assert said("quota", "set", name, typed, "--profile", "ana") == \
            (0, f"{name} for ana: {shown}.\n")
    code, text = said("quota", "show", "--profile", "ana")
    assert code == 0
    lines = {line.split()[0]: line.split()[1] for line in text.splitlines()[1:]}
    assert lines == {"cloud_tokens_per_day": "no", "cloud_cost_per_month": "0.125",
                     "requests_per_minute": "no", "tokens_per_minute": "no",
                     "allowed_routes": "local,auto", "count_local": "true",
                     "allow_unpriced": "false"}
    code, text = said("quota", "set", "allowed_routes", "local,bogus", "--profile", "ana")
    assert code == 2 and text.endswith("must be a list of auto, local, cloud, got local,bogus.\n")


def test_quota_help_lists_every_limit():
    """allow_unpriced was missing from `outpost quota --help`."""
    from app.storage.quotas import LIMIT_NAMES

    shown = cli("quota", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert [name for name in LIMIT_NAMES if name not in text] == []


def test_a_rate_of_one_is_said_in_the_singular(tmp_path):
    """"Rate limit for bo: 1 requests per minute"."""
    clock = Clock()
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("bo", "requests_per_minute", 1, by=ADMIN)
    guard = QuotaGuard(book, UsageLedger(Store(tmp_path / "outpost.db"), "x"), clock=clock)
    guard.check("bo", "auto", True, 10, 10)
    clock.now += 59.5  # half a second to wait: not "try again in 0 s"
    with pytest.raises(RateLimitedLocally, match=r"^Rate limit for bo: 1 request per minute; "
                                                 r"try again in 1 s\.$"):
        guard.check("bo", "auto", True, 10, 10)
    book.set("bo", "requests_per_minute", None, by=ADMIN)
    book.set("bo", "tokens_per_minute", 1, by=ADMIN)
    with pytest.raises(QuotaExceeded, match=r"larger than bo's limit of 1 token per minute\. "
                                            r"Shorten the message"):
        guard.check("bo", "auto", True, 10, 10)
