"""A cloud attempt that reached the provider but reported no usage (the hedge it lost, a cancel,
a stream cut off) is in the usage ledger with the prompt Outpost counted before sending, marked
estimated and priced so (``~``): the provider bills a prompt it received. One that never went
out (connection refused) or that the provider refused (an HTTP error status) keeps no tokens
and costs a known $0. The fault server plays the provider; a scripted engine the local model."""
from __future__ import annotations

import threading

import httpx
import pytest

from app.accounting.metering import price_table
from app.accounting.pricing import cost_of
from app.chat.connectivity import Connectivity
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import ConnectionFailed, OutpostError
from app.domain.messages import ChatMessage, ChatRequest, Role, TextDelta, Usage
from app.storage.ledger import make_ledger, start_of_day
from app.storage.quotas import QuotaBook, QuotaExceeded, QuotaGuard
from app.storage.store import Store
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import Cut, Stall, fault_server, normal, refused_url, server_error
from tests.storage.test_quotas import ADMIN
from tests.support import Borrowed, ScriptedEngine, reply

MODEL = "gpt-4o-mini"  # in the price table: tiktoken counts its prompt exactly


def cloud(url: str, on_attempt, first_token: float = 60.0,
          client: httpx.Client | None = None) -> OpenAICompatEngine:
    """The provider, patient (it never gives up first) and never retrying."""
    return OpenAICompatEngine(ProviderConfig("fake", "openai", url + "/v1", MODEL), "sk-test",
                              policy=RetryPolicy(max_retries=0),
                              timeouts=Timeouts(connect=2, first_token=first_token, idle=60),
                              on_attempt=on_attempt, client=client)


def prompt_cost(tokens: int) -> float:
    return cost_of(Usage(tokens, 0, estimated=True),
                   price_table().price_for("openai", MODEL)).usd


def test_a_hedge_that_lost_is_billed_its_prompt_estimated(tmp_path):
    """The provider holds its answer back (no response head); the local hedge answers once the
    provider has the whole request, so the cloud attempt loses the race after sending it."""
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    ledger = service.ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([normal(head_delay=30.0)])

        def local_answers_once_sent(request, cancel):
            assert server.wait_until(lambda: bool(server.chat_requests()), timeout=10)
            yield from reply("Hi", " there")

        engine = cloud(server.url, ledger.record)
        routed = RoutedEngine(engine, lambda: Borrowed(ScriptedEngine(local_answers_once_sent)),
                              Connectivity(), hedge_after_s=0.05, on_attempt=ledger.record)
        turn = service.start_turn("Say hi", model=MODEL, counter=routed,
                                  options=TurnOptions(max_tokens=8), effective_route="auto")
        list(turn.run(routed, threading.Event()))
        assert server.wait_disconnected(0, timeout=10)  # the cloud request was hung up on
        routed.close()
    prompt, exact = engine.count_prompt(turn.request.messages)
    assert exact and prompt == turn.fit.prompt_tokens  # the figure the meter showed
    log = {r["provider"]: r for r in store.request_log(turn.request.idempotency_key)}
    lost = log["fake"]
    assert lost["outcome"] == "hedge_lost" and lost["status"] is None
    assert (lost["prompt_tokens"], lost["completion_tokens"]) == (prompt, 0)
    assert lost["tokens_estimated"] == 1 and lost["cost_estimated"] == 1
    assert lost["cost_usd"] == pytest.approx(prompt_cost(prompt)) and lost["cost_usd"] > 0
    # the totals (`outpost usage`, the dialog) and so the quotas' day and month count it
    totals = ledger.totals(start_of_day())
    assert totals.cloud_tokens == prompt and totals.cost_estimated
    assert totals.cost_usd == pytest.approx(prompt_cost(prompt), abs=1e-6)
    [row] = [r for r in totals.by_model if r["provider"] == "fake"]
    assert row["prompt_tokens"] == prompt and row["cost_estimated"]
    # the reply's cost is the sum of its attempts': the lost hedge's, estimated
    assert ledger.turn_cost(turn.request.idempotency_key) == (pytest.approx(lost["cost_usd"]),
                                                              True)
    # a daily quota of exactly that prompt is spent: the next cloud turn is refused
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    book.set(lost["profile"], "cloud_tokens_per_day", prompt, by=ADMIN)
    with pytest.raises(QuotaExceeded, match=f"{prompt:,} of {prompt:,} tokens used today"):
        QuotaGuard(book, ledger).check(lost["profile"], "auto", cloud=True, prompt_tokens=5,
                                       max_tokens=16)


MESSAGES = (ChatMessage(Role.USER, "Say hi"),)


def stream_and_cancel(engine, cancel: threading.Event) -> None:
    list(engine.stream(ChatRequest(MODEL, MESSAGES, max_tokens=8), cancel))


def stream(engine) -> None:
    try:
        list(engine.stream(ChatRequest(MODEL, MESSAGES, max_tokens=8), threading.Event()))
    except OutpostError:
        pass


def assert_prompt_billed(row, engine) -> None:
    """The attempt carries the prompt counted before sending, no reply, marked and priced as
    an estimate."""
    prompt = engine.count_prompt(MESSAGES)[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["tokens_estimated"]) == (
        prompt, 0, 1)
    assert row["cost_usd"] == pytest.approx(prompt_cost(prompt)) and row["cost_estimated"] == 1


def test_a_cancel_while_the_provider_holds_its_answer_bills_the_prompt(tmp_path):
    """Stopped (as the user's Stop does) once the provider has the request, before its head."""
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    cancel = threading.Event()
    with fault_server() as server:
        server.script([normal(head_delay=30.0)])
        engine = cloud(server.url, ledger.record)
        stopper = threading.Thread(target=lambda: server.wait_until(
            lambda: bool(server.chat_requests()), timeout=10) and cancel.set())
        stopper.start()
        stream_and_cancel(engine, cancel)
        stopper.join()
        engine.close()
    [row] = store.request_log()
    assert row["outcome"] == "cancelled" and row["status"] is None
    assert_prompt_billed(row, engine)


def test_a_cancel_after_the_head_before_any_text_bills_the_prompt(tmp_path):
    """The provider answered 200 and then held back; stopped as the head arrived."""
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    cancel = threading.Event()
    with fault_server() as server:
        server.script([Stall(seconds=30.0)])
        engine = cloud(server.url, ledger.record,
                       client=httpx.Client(event_hooks={"response": [lambda r: cancel.set()]}))
        stream_and_cancel(engine, cancel)
        engine.close()
    [row] = store.request_log()
    assert row["outcome"] == "cancelled" and row["status"] == 200
    assert_prompt_billed(row, engine)


def test_a_stream_cut_off_before_any_text_is_billed_its_prompt(tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([Cut(after=0, usage=False)])
        engine = cloud(server.url, ledger.record)
        stream(engine)
        engine.close()
    [row] = store.request_log()
    prompt = engine.count_prompt(MESSAGES)[0]
    assert row["status"] == 200 and row["error_kind"]
    assert (row["prompt_tokens"], row["tokens_estimated"]) == (prompt, 1)
    assert row["cost_usd"] == pytest.approx(prompt_cost(prompt)) and row["cost_estimated"] == 1


def test_a_first_token_deadline_after_sending_is_billed_its_prompt(tmp_path):
    """Outpost stopped waiting; the provider had the prompt."""
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([normal(head_delay=30.0)])
        engine = cloud(server.url, ledger.record, first_token=0.5)
        stream(engine)
        engine.close()
    [row] = store.request_log()
    assert row["error_kind"] == "timeout" and row["status"] is None
    assert (row["prompt_tokens"], row["tokens_estimated"]) == (
        engine.count_prompt(MESSAGES)[0], 1)


def test_an_attempt_that_never_connected_stays_at_nothing(tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    with refused_url() as url:
        engine = cloud(url, ledger.record)
        with pytest.raises(ConnectionFailed):
            list(engine.stream(ChatRequest(MODEL, MESSAGES, max_tokens=8), threading.Event()))
        engine.close()
    [row] = store.request_log()
    assert row["prompt_tokens"] is None and row["completion_tokens"] is None
    assert row["cost_usd"] == 0.0 and not row["cost_estimated"]  # a known $0: nothing went out


def test_an_error_status_stays_at_nothing(tmp_path):
    """The provider refused the request (HTTP 500): it bills nothing."""
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([server_error(500)])
        engine = cloud(server.url, ledger.record)
        stream(engine)
        engine.close()
    [row] = store.request_log()
    assert row["status"] == 500 and row["prompt_tokens"] is None and row["cost_usd"] == 0.0


def test_text_that_reached_the_user_is_counted_as_before(tmp_path):
    """Unchanged: a reply with usage reported keeps the provider's figures, unestimated."""
    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([normal(prompt_tokens=1200, completion_tokens=3)])
        engine = cloud(server.url, ledger.record)
        events = list(engine.stream(ChatRequest(MODEL, MESSAGES, max_tokens=8),
                                    threading.Event()))
        engine.close()
    assert any(isinstance(e, TextDelta) for e in events)
    [row] = store.request_log()
    assert (row["prompt_tokens"], row["completion_tokens"], row["tokens_estimated"]) == (
        1200, 3, 0)
