"""A budget holds for the whole request, not only for its prompt: a daily token quota or a
monthly cloud budget with room for the prompt and a shorter reply than asked limits the reply's
max_tokens to what is left (and says so); one without room for the prompt and a minimal reply
refuses, counting what the message could need. Real SQLite ledgers, a real loopback provider."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import pytest

from app.accounting.pricing import PriceTable, cost_of, estimate_before_sending
from app.chat.pipeline import Notice, TurnEnded, TurnPipeline, TurnStarted, TurnTarget
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.context import ReplyCap
from app.domain.messages import Usage
from app.domain.test_time import Plan
from app.storage.ledger import UsageLedger, start_of_day
from app.storage.profiles import Profile
from app.storage.quotas import (
    MIN_REPLY_TOKENS,
    CloudRateLimited,
    QuotaBook,
    QuotaExceeded,
    QuotaGuard,
    RateLimitedLocally,
)
from app.storage.store import Store
from engines.http_policy import AttemptRecord
from tests.fault_server import Normal, Status, fault_server
from tests.support import FixedEngines, ScriptedEngine, fault_cloud, reply

ADMIN = Profile("admin", is_admin=True)
PRICE = PriceTable.load().price_for("openai", "gpt-4o-mini")  # $0.15 in, $0.60 out per 1M


def attempt(key: str, prompt: int, completion: int, model: str = "gpt-4o-mini"
            ) -> AttemptRecord:
    return AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                         idempotency_key=key, provider="openai", model=model, kind="openai",
                         prompt_tokens=prompt, completion_tokens=completion)


def guarded(tmp_path, name: str, value):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana",
                         price_for=lambda kind, provider, model: PRICE)
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", name, value, by=ADMIN)
    return store, ledger, QuotaGuard(book, ledger)


def test_the_daily_quota_limits_the_reply_to_what_is_left(tmp_path):
    store, ledger, guard = guarded(tmp_path, "cloud_tokens_per_day", 100)
    cap = guard.check("ana", "cloud", True, prompt_tokens=19, max_tokens=2000)
    assert cap == ReplyCap(81, 2000, "daily token quota")
    assert cap.describe() == "reply limited to 81 tokens: daily token quota"
    assert guard.check("ana", "cloud", True, prompt_tokens=19, max_tokens=81) is None
    ledger.record(attempt("t1", 19, 71))  # 90 used: 10 left, not room for 19 + a reply
    with pytest.raises(QuotaExceeded) as info:
        guard.check("ana", "cloud", True, prompt_tokens=19, max_tokens=2000)
    said = str(info.value)
    assert "Daily token quota reached for ana: 90 of 100 tokens used today" in said
    assert "this message could need 2,019 more (19 for the prompt, up to 2,000 for the " \
           "reply)" in said
    assert f"the 10 left are not enough for the prompt and a {MIN_REPLY_TOKENS}-token " \
           "reply" in said
    store.close()


def test_a_short_reply_that_fits_is_neither_limited_nor_refused(tmp_path):
    store, ledger, guard = guarded(tmp_path, "cloud_tokens_per_day", 100)
    ledger.record(attempt("t1", 50, 20))  # 30 left
    assert guard.check("ana", "cloud", True, prompt_tokens=20, max_tokens=5) is None
    assert guard.check("ana", "cloud", True, prompt_tokens=10, max_tokens=50) == \
        ReplyCap(20, 50, "daily token quota")
    with pytest.raises(QuotaExceeded, match="the 30 left are not enough for the prompt and "
                                            "a 12-token reply"):
        guard.check("ana", "cloud", True, prompt_tokens=20, max_tokens=12)
    store.close()


def test_the_monthly_budget_limits_the_reply_to_what_the_dollars_buy(tmp_path):
    store, ledger, guard = guarded(tmp_path, "cloud_cost_per_month", 0.001)
    cap = guard.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE)
    # $0.001 less the prompt's $0.00000285, at $0.60 per 1M output tokens: 1,661 tokens
    assert cap == ReplyCap(1661, 2000, "monthly cloud budget")
    most = estimate_before_sending(19, cap.max_tokens, PRICE).usd
    assert most <= 0.001 < estimate_before_sending(19, cap.max_tokens + 1, PRICE).usd
    ledger.record(attempt("t1", 19, cap.max_tokens))  # the whole reply, as limited
    spent = cost_of(Usage(19, cap.max_tokens), PRICE).usd
    assert spent <= 0.001
    with pytest.raises(QuotaExceeded) as info:
        guard.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE)
    said = str(info.value)
    assert said.startswith("Monthly cloud budget reached for ana: ")
    assert "this message could cost up to " in said
    assert "19 prompt tokens and up to 2,000 reply tokens at gpt-4o-mini's price" in said
    store.close()


def test_the_tighter_budget_sets_the_limit(tmp_path):
    store, ledger, guard = guarded(tmp_path, "cloud_cost_per_month", 0.001)
    QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json").set(
        "ana", "cloud_tokens_per_day", 500, by=ADMIN)
    assert guard.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE) == \
        ReplyCap(481, 2000, "daily token quota")
    store.close()


def service_with_daily_quota(tmp_path, tokens: int):
    store = Store()
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", tokens, by=ADMIN)
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    return store, service


def test_the_request_sent_asks_for_no_more_than_the_quota_leaves(outpost_home, tmp_path):
    """Through the pipeline to a real loopback provider: the request's max_tokens is what the
    quota left; the turn says so (a Notice: the CLI's stderr, the window's banner) and the
    stored reply keeps it (its footer and Details)."""
    store, service = service_with_daily_quota(tmp_path, 100)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        events = list(pipeline.send("Tell me about the sea.",
                                    target=TurnTarget(provider="fault", route="cloud"),
                                    options=TurnOptions(max_tokens=2000)))
        [request] = server.chat_requests()
        cloud.close()
    started = next(e for e in events if isinstance(e, TurnStarted))
    left = 100 - started.fit.prompt_tokens
    assert request.json["max_tokens"] == left == started.fit.max_tokens
    notes = [e.text for e in events if isinstance(e, Notice)]
    assert notes == [f"reply limited to {left} tokens: daily token quota (2,000 asked, more "
                     "than is left)."]
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    params = ended.outcome.message.params
    assert params["max_tokens"] == left
    assert ReplyCap.from_record(params["reply_cap"]) == \
        ReplyCap(left, 2000, "daily token quota")
    store.close()


def test_the_cli_says_the_reply_was_limited_and_sends_the_limit(outpost_home):
    env = os.environ.copy()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    with fault_server() as server:
        assert cli("providers", "add", "acme", "--base-url", server.url + "/v1",
                   "--model", "gpt-4o-mini").returncode == 0
        assert cli("quota", "set", "cloud_tokens_per_day", "200").returncode == 0
        # what the provider reports using (its counts are its own): 50, then the other 150
        server.script([Normal(prompt_tokens=10, completion_tokens=40),
                       Normal(finish="length", prompt_tokens=10, completion_tokens=140)])
        asked = cli("ask", "Why is the sky blue?", "--provider", "acme", "--route", "cloud",
                    "--max-tokens", "2000", "--json")
        cut = cli("ask", "And at sunset?", "--provider", "acme", "--route", "cloud",
                  "--max-tokens", "2000")
        refused = cli("ask", "And at night?", "--provider", "acme", "--route", "cloud",
                      "--max-tokens", "2000")
        first, second = server.chat_requests()
    assert asked.returncode == 0, asked.stderr
    context = json.loads(asked.stdout.splitlines()[0])
    left = 200 - context["prompt_tokens"]  # counted exactly (tiktoken)
    assert context["max_tokens"] == first.json["max_tokens"] == left
    assert f"outpost: reply limited to {left} tokens: daily token quota (2,000 asked" \
        in asked.stderr
    assert cut.returncode == 0, cut.stderr
    limit = second.json["max_tokens"]
    assert 0 < limit < 150
    assert f"outpost: reply limited to {limit} tokens: daily token quota" in cut.stderr
    assert f"outpost: the reply was cut at its token limit ({limit} tokens), what the daily " \
           "token quota left." in cut.stderr
    assert refused.returncode == 2 and "Daily token quota reached" in refused.stderr
    assert "200 of 200 tokens used today, and this message could need" in refused.stderr


def test_best_of_n_shares_the_budget_among_its_candidates_and_judge(tmp_path):
    """Best-of-n sends the prompt n times and pays for n replies (a judge: one more request
    holding every candidate): the quota reckons them all, and each candidate's reply gets an
    equal share of what is left, so the turn as a whole stays within the budget."""
    store, ledger, guard = guarded(tmp_path, "cloud_tokens_per_day", 1000)
    four = Plan("best_of", 4, scorer="json").fanout()
    cap = guard.check("ana", "cloud", True, 19, 2000, fanout=four)
    assert cap == ReplyCap((1000 - 4 * 19) // 4, 2000,
                           "daily token quota, shared by best of 4")
    assert four.tokens(19, cap.max_tokens) <= 1000 < four.tokens(19, cap.max_tokens + 1)
    judged = Plan("best_of", 4, scorer="judge").fanout()
    cap = guard.check("ana", "cloud", True, 19, 2000, fanout=judged)
    assert judged.tokens(19, cap.max_tokens) <= 1000 < judged.tokens(19, cap.max_tokens + 1)
    assert cap.max_tokens < (1000 - 4 * 19) // 4  # the judge reads every candidate again
    assert cap.limit == "daily token quota, shared by best of 4 and a judge"
    voting = Plan("self_consistency", 8).fanout()
    ledger.record(attempt("t1", 19, 800))  # 181 left: 8 prompts of 19 and 3 tokens each
    with pytest.raises(QuotaExceeded) as info:
        guard.check("ana", "cloud", True, 19, 2000, fanout=voting)
    said = str(info.value)
    assert "this message could need 16,152 more (self-consistency over 8: 8 requests, 152 " \
           "for the prompts, up to 16,000 for the replies)" in said
    assert f"the 181 left are not enough for the prompt and a {MIN_REPLY_TOKENS}-token reply " \
           "to each request" in said
    assert guard.check("ana", "cloud", True, 19, 2000) == \
        ReplyCap(181 - 19, 2000, "daily token quota")  # one request still fits
    store.close()


def test_the_monthly_budget_pays_for_every_candidate(tmp_path):
    store, ledger, guard = guarded(tmp_path, "cloud_cost_per_month", 0.001)
    three = Plan("best_of", 3, scorer="json").fanout()
    cap = guard.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE,
                      fanout=three)
    assert cap.limit == "monthly cloud budget, shared by best of 3"
    most = estimate_before_sending(3 * 19, 3 * cap.max_tokens, PRICE).usd
    assert most <= 0.001 < estimate_before_sending(3 * 19, 3 * cap.max_tokens + 3, PRICE).usd
    store.close()


def test_a_rate_limit_counts_each_request_a_turn_sends(tmp_path):
    store, ledger, guard = guarded(tmp_path, "requests_per_minute", 3)
    with pytest.raises(QuotaExceeded, match=r"This message \(best of 4: 4 requests, 8,076 "
                                            r"tokens with max tokens\) is larger than ana's "
                                            r"limit of 3 requests per minute\."):
        guard.check("ana", "cloud", True, 19, 2000,
                    fanout=Plan("best_of", 4, scorer="json").fanout())
    assert guard.check("ana", "cloud", True, 19, 2000,
                       fanout=Plan("best_of", 3, scorer="json").fanout()) is None
    with pytest.raises(RateLimitedLocally):  # the three candidates took the minute's three
        guard.check("ana", "cloud", True, 19, 2000)
    store.close()


def test_best_of_n_to_a_provider_sends_each_candidate_the_shared_limit(outpost_home, tmp_path):
    """Through the pipeline to a real loopback provider: every candidate's request asks for
    the share of the quota left, and what the provider reports for the whole turn fits it."""
    store, service = service_with_daily_quota(tmp_path, 600)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        server.script([Normal(chunks=('{"a": 1}',), prompt_tokens=20, completion_tokens=150)
                       for _ in range(3)])
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        events = list(pipeline.send("Tell me about the sea.",
                                    target=TurnTarget(provider="fault", route="cloud",
                                                      test_time=Plan("best_of", 3,
                                                                     scorer="json")),
                                    options=TurnOptions(max_tokens=2000)))
        requests = server.chat_requests()
        cloud.close()
    started = next(e for e in events if isinstance(e, TurnStarted))
    share = (600 - 3 * started.fit.prompt_tokens) // 3
    assert len(requests) == 3
    assert [r.json["max_tokens"] for r in requests] == [share] * 3
    assert [e.text for e in events if isinstance(e, Notice)] == [
        f"reply limited to {share} tokens: daily token quota, shared by best of 3 (2,000 "
        "asked, more than is left)."]
    assert any(isinstance(e, TurnEnded) for e in events)
    store.close()


def test_retrying_a_failed_turn_checks_the_quota_again(outpost_home, tmp_path):
    """A retry is a new request: the quota is checked again (what the day used since is in
    the ledger), and the retry's reply is limited to what is left, or refused."""
    store, service = service_with_daily_quota(tmp_path, 100)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        target = TurnTarget(provider="fault", route="cloud")
        server.script([Status(400)])
        failed = pipeline.prepare("Tell me about the sea.", target=target,
                                  options=TurnOptions(max_tokens=2000))
        [ended] = [e for e in failed.run(threading.Event()) if isinstance(e, TurnEnded)]
        assert ended.outcome.error is not None
        prompt = failed.turn.fit.prompt_tokens
        assert failed.turn.request.max_tokens == 100 - prompt  # the day's first request
        service.ledger.record(attempt("elsewhere", 10, 20))  # another window used 30 since
        spent = service.ledger.totals(start_of_day(dt.datetime.now()), "ana").cloud_tokens
        assert spent >= 30
        retried = pipeline.retry(failed.turn, target=target)
        assert retried.turn.request.max_tokens == 100 - spent - prompt
        assert retried.turn.reply_cap == ReplyCap(100 - spent - prompt, 2000,
                                                  "daily token quota")
        service.ledger.record(attempt("more", 30, 40))  # the day's quota spent
        with pytest.raises(QuotaExceeded, match="Daily token quota reached for ana"):
            pipeline.retry(failed.turn, target=target)
        cloud.close()
    store.close()


def frozen_guard(tmp_path, name: str, value):
    """A service whose quota clock stands still: the per-minute buckets never refill."""
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", name, value, by=ADMIN)
    guard = QuotaGuard(book, ledger, clock=lambda: 0.0)
    return store, ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")


def test_each_request_of_a_turn_is_counted_once_against_the_per_minute_limit(tmp_path):
    """The check takes a best-of-n turn's requests up front; its candidates' attempts then
    land in the ledger and must not be charged again (9 of 10 were taken for 5 requests)."""
    store, service = frozen_guard(tmp_path, "requests_per_minute", 6)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        server.script([Normal(chunks=('{"a": 1}',)) for _ in range(4)])
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        events = list(pipeline.send("Tell me about the sea.", target=TurnTarget(
            provider="fault", route="cloud", test_time=Plan("best_of", 4, scorer="json")),
            options=TurnOptions(max_tokens=50)))
        assert len(server.chat_requests()) == 4
        cloud.close()
    assert any(isinstance(e, TurnEnded) for e in events)
    guard = service.quotas
    guard.check("ana", "cloud", True, 10, 10)  # the 5th and 6th requests of the minute
    guard.check("ana", "cloud", True, 10, 10)
    with pytest.raises(RateLimitedLocally):
        guard.check("ana", "cloud", True, 10, 10)
    store.close()


def test_a_retry_is_counted_once_against_the_per_minute_limit(tmp_path):
    store, service = frozen_guard(tmp_path, "requests_per_minute", 3)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        target = TurnTarget(provider="fault", route="cloud")
        server.script([Status(400), Normal()])
        failed = pipeline.prepare("Tell me about the sea.", target=target)
        list(failed.run(threading.Event()))
        retried = pipeline.retry(failed.turn, target=target)
        list(retried.run(threading.Event()))
        assert len(server.chat_requests()) == 2
        cloud.close()
    service.quotas.check("ana", "cloud", True, 10, 10)  # the third of the minute
    with pytest.raises(RateLimitedLocally):
        service.quotas.check("ana", "cloud", True, 10, 10)
    store.close()


def service_with_minute_limit(tmp_path, tokens: int):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "tokens_per_minute", tokens, by=ADMIN)
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    return store, service


def test_tokens_per_minute_limits_the_reply_rather_than_refuse_a_short_message(
        outpost_home, tmp_path):
    """Trial 10: bob, 500 tokens a minute, `ask "hi" --route cloud` with the default
    max_tokens 512: "This request (530 tokens with max tokens) is larger than bob's limit"
    (exit 2): he could send nothing to the cloud. The request goes with max_tokens lowered
    to what the minute holds after the prompt, and the turn says so."""
    store, service = service_with_minute_limit(tmp_path, 500)
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = service.ledger.record
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
        events = list(pipeline.send("hi", target=TurnTarget(provider="fault", route="cloud"),
                                    options=TurnOptions(max_tokens=512)))
        [request] = server.chat_requests()
        cloud.close()
    started = next(e for e in events if isinstance(e, TurnStarted))
    room = 500 - started.fit.prompt_tokens
    assert request.json["max_tokens"] == room
    assert [e.text for e in events if isinstance(e, Notice)] == [
        f"reply limited to {room} tokens: tokens per minute limit (512 asked, more than a "
        "minute's limit)."]
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert ended.outcome.error is None
    store.close()


def test_a_prompt_larger_than_a_minute_s_tokens_is_refused_saying_how_to_fix_it(tmp_path):
    store, _ledger, guard = guarded(tmp_path, "tokens_per_minute", 500)
    with pytest.raises(QuotaExceeded) as info:
        guard.check("ana", "cloud", True, 490, 512)
    said = str(info.value)
    assert said.startswith("This message's prompt (490 tokens) with a 16-token reply is "
                           "larger than ana's limit of 500 tokens per minute. Shorten the "
                           "message (or start a new chat")
    assert "ask the admin to raise tokens_per_minute" in said
    assert said.endswith("The local model is not limited: switch this chat to Local only.")
    assert info.value.lasting and info.value.cloud_budget is not None
    store.close()


def test_auto_has_the_local_model_answer_what_a_minute_s_tokens_cannot_take(
        outpost_home, tmp_path):
    """Trial 10: under Auto, bob's message that the per-minute limit refused was not answered
    by the local model either. A reply the limit would cut short, and a prompt it cannot
    hold at all, are answered locally in full (the limit does not count the local model);
    nothing reaches the provider."""
    store, service = service_with_minute_limit(tmp_path, 500)
    for prompt in ("hi", "pear " * 600):
        local = ScriptedEngine(reply("A", " whole", " answer."))
        with fault_server() as server:
            pipeline = TurnPipeline(service, FixedEngines(local, fault_cloud(server.url,
                                                                             store)))
            events = list(pipeline.send(prompt, target=TurnTarget(provider="fault",
                                                                  route="auto"),
                                        options=TurnOptions(max_tokens=512)))
            assert server.chat_requests() == []
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        assert ended.outcome.error is None and ended.outcome.answered.engine == "local"
        assert [r.max_tokens for r in local.requests] == [512]
        assert ended.outcome.route_reason.endswith(": answered locally")
        assert "tokens per minute" in ended.outcome.route_reason or \
            "per minute" in ended.outcome.route_reason
    store.close()


def test_auto_has_the_local_model_answer_now_rather_than_wait_for_a_minute_s_tokens(
        outpost_home, tmp_path):
    """Under Auto a spent budget or a cut-short reply had the local model answer, but a
    request the per-minute limit would hold until its bucket refilled waited (or was refused)
    although that limit does not count the local model. It answers now, in full, and the
    route reason and a notice say why; nothing more reaches the provider."""
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "tokens_per_minute", 500, by=ADMIN)
    guard = QuotaGuard(book, ledger, clock=lambda: 0.0)  # no refill between the turns
    service = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")
    local = ScriptedEngine(reply("A", " whole", " answer."))
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        cloud.on_attempt = ledger.record
        pipeline = TurnPipeline(service, FixedEngines(local, cloud))
        first = list(pipeline.send("hi", target=TurnTarget(provider="fault", route="cloud"),
                                   options=TurnOptions(max_tokens=400)))
        assert len(server.chat_requests()) == 1
        events = list(pipeline.send("and then?", target=TurnTarget(provider="fault",
                                                                     route="auto"),
                                    options=TurnOptions(max_tokens=300)))
        assert len(server.chat_requests()) == 1  # the second went nowhere
        cloud.close()
    assert next(e for e in first if isinstance(e, TurnEnded)).outcome.error is None
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert ended.outcome.error is None and ended.outcome.answered.engine == "local"
    assert [r.max_tokens for r in local.requests] == [300]
    reason = ended.outcome.route_reason
    assert reason.startswith("fault: limit of 500 tokens per minute: the cloud would wait ")
    assert reason.endswith(" s: answered locally")
    [notice] = [e.text for e in events if isinstance(e, Notice)]
    assert notice.startswith("ana's limit of 500 tokens per minute would have the cloud wait ")
    assert notice.endswith(" s. The local model answers this message.")
    # the guard alone: only Auto (local_instead) with the local model not counted says so
    with pytest.raises(CloudRateLimited):
        guard.check("ana", "auto", True, 10, 300, local_instead=True)
    with pytest.raises(RateLimitedLocally):
        guard.check("ana", "cloud", True, 10, 300)
    book.set("ana", "count_local", True, by=ADMIN)
    with pytest.raises(RateLimitedLocally):
        guard.check("ana", "auto", True, 10, 300, local_instead=True)


def test_a_dry_check_reserves_and_takes_nothing(tmp_path):
    """The token meter's look (``dry``) gives the send's answer without a hold or a take:
    with one request a minute, any number of looks leave the one request to the send; after
    it, a look says the rate limit's words, as the next send would."""
    from app.storage.quota_holds import QuotaHolds

    store, ledger, _ = guarded(tmp_path, "cloud_tokens_per_day", 100)
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "requests_per_minute", 1, by=ADMIN)
    guard = QuotaGuard(book, ledger, holds=QuotaHolds(store))
    for _ in range(3):
        assert guard.check("ana", "cloud", True, 19, 2000, hold="t1", dry=True) == \
            ReplyCap(81, 2000, "daily token quota")
    assert store.db.execute("SELECT COUNT(*) FROM quota_holds").fetchone()[0] == 0
    assert guard.check("ana", "cloud", True, 19, 2000, hold="t1") == \
        ReplyCap(81, 2000, "daily token quota")  # the send: held, and its request taken
    assert store.db.execute("SELECT COUNT(*) FROM quota_holds").fetchone()[0] == 1
    guard.release("t1")
    with pytest.raises(RateLimitedLocally, match="Rate limit for ana: 1 request per minute"):
        guard.check("ana", "cloud", True, 19, 50, dry=True)
    store.close()
