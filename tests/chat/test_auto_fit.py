"""When the local model answers an Auto turn (the provider unreachable, slower than the hedge,
broken off mid-way, or its quota spent), the conversation is fitted into the *local* model's
context window, not the cloud model's it was built for: the oldest turns are left out, as on the
Local only route, and the turn says what was left out (a ``Refit`` event; ``Turn.refit``; the
CLI's ``context`` line and notice).

A real SQLite store holds a long conversation; the provider is a real loopback address where
nothing listens (or the fault server); the local model is a scripted engine with a 4,096-token
window that counts honestly (chars / 4, the count its stream enforces) and refuses a prompt
that does not fit, as the real one does. It loads when it is first waited for, as the CLI's
does: it is not ready when the router turns to it."""
from __future__ import annotations

import json
import threading

import pytest

from app import cli
from app.chat.connectivity import Connectivity
from app.chat.pipeline import TurnEnded, TurnPipeline, TurnStarted, TurnTarget
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.messages import (
    MessageStatus,
    Refit,
    Role,
    Seam,
    TextDelta,
    estimate_prompt_tokens,
)
from app.storage.ledger import UsageLedger
from app.storage.profiles import Profile
from app.storage.quotas import QuotaBook, QuotaGuard
from app.storage.store import Store
from engines.http_policy import AttemptRecord, RetryPolicy, Timeouts
from engines.llama_local import ContextOverflow
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import Cut, Status, fault_server, refused_url, slow_first_token
from tests.support import FixedEngines, ScriptedEngine, reply

WINDOW = 4096
CLOUD_WINDOW = 128_000  # gpt-4o-mini's, from resources/context_windows.json
OLD_QUESTION = "Tell me everything about the sea. " + "waves and tides " * 700  # ~2,830 tokens
OLD_ANSWER = "The sea is wide."
NEXT_QUESTION = "And the rivers? " + "streams and deltas " * 600  # ~2,850 tokens
NEXT_ANSWER = "Rivers run to it."
SYSTEM = "You are brief."


class SmallLocal(ScriptedEngine):
    """The local model's stand-in: a 4,096-token window, an honest count (the one its stream
    enforces: a prompt that leaves no room is refused with the real engine's error), its usage
    reported from that count; not loaded until it is first waited for."""

    context_window = WINDOW

    def __init__(self, *scripts):
        super().__init__(*scripts, model="small-local.gguf", ready=False)

    def wait_ready(self, timeout: float | None = 60) -> None:
        self.finish_loading()  # "loads" now: the router met it not ready

    def stream(self, request, cancel):
        tokens, _ = self.count_prompt(request.messages)
        if tokens >= WINDOW:
            self.requests.append(request)
            raise ContextOverflow(
                f"The conversation is {tokens} tokens long, which does not fit the local "
                f"model's context window of {WINDOW} tokens. Start a new chat or shorten the "
                "message.")
        return super().stream(request, cancel)


def answer(request, cancel):
    """The local reply, its usage counted as the model would: the prompt it was sent."""
    return reply("Sure", ".", prompt_tokens=estimate_prompt_tokens(request.messages))


def long_conversation(store: Store) -> str:
    """~5,700 tokens of history (two long questions, short answers), fitted for no window."""
    conversation = store.create_conversation("Seas", SYSTEM)
    for role, text in ((Role.USER, OLD_QUESTION), (Role.ASSISTANT, OLD_ANSWER),
                       (Role.USER, NEXT_QUESTION), (Role.ASSISTANT, NEXT_ANSWER)):
        store.add_message(conversation.id, role, text)
    return conversation.id


def dead_cloud(url: str, store: Store) -> OpenAICompatEngine:
    """gpt-4o-mini (a 128,000-token window) at ``url``: quick retries, a patient first token
    (the hedge test's cloud holds it back longer than the hedge waits)."""
    return OpenAICompatEngine(
        ProviderConfig("dead", "openai", url + "/v1", "gpt-4o-mini"), "sk-test",
        policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.02),
        timeouts=Timeouts(connect=1, first_token=60, idle=2), on_attempt=store.log_attempt)


def run_auto_turn(store: Store, routed: RoutedEngine, conversation_id: str):
    turn = ChatService(store, Settings()).start_turn(
        "Summarize.", conversation_id, model=routed.info.model, counter=routed,
        effective_route="auto", options=TurnOptions(max_tokens=8))
    try:
        events = list(turn.run(routed, threading.Event()))
    finally:
        routed.close()
    return turn, events, store.get_message(turn.assistant_message_id)


def assert_fitted_for_the_local_window(turn, events, local: SmallLocal, max_tokens: int = 8):
    """The turn was built for the cloud's window (nothing left out); the local model was sent
    the conversation without its oldest turn, and the turn says so."""
    assert turn.fit.window == CLOUD_WINDOW and turn.fit.dropped == ()
    [refit] = [e for e in events if isinstance(e, Refit)]
    assert (refit.engine, refit.model) == ("local", "small-local.gguf")
    fit = refit.fit
    assert fit.window == WINDOW and fit.max_tokens == max_tokens
    assert [(m.role, m.content) for m in fit.dropped] == [(Role.USER, OLD_QUESTION),
                                                          (Role.ASSISTANT, OLD_ANSWER)]
    assert "The oldest turn (2 messages, “Tell me everything about the sea." in \
        fit.describe_dropped()
    assert turn.refit == fit
    sent = local.requests[-1]
    assert [m.content for m in sent.messages] == [SYSTEM, NEXT_QUESTION, NEXT_ANSWER,
                                                  "Summarize."]
    assert sent.messages == fit.messages
    assert local.count_prompt(sent.messages)[0] == fit.prompt_tokens
    assert fit.prompt_tokens + max_tokens <= WINDOW
    # what the turn was built with stays as built (a retry or the outbox sends it again)
    assert len(turn.request.messages) == 6


@pytest.mark.parametrize("known_offline", [False, True])
def test_an_unreachable_provider_is_answered_locally_within_the_local_window(tmp_path,
                                                                            known_offline):
    """The tester's case: nothing listens at the provider's address (or it is known offline
    and not tried); the local model answers the long conversation, its oldest turn left out,
    instead of refusing it for its window."""
    store = Store(tmp_path / "outpost.db")
    conversation_id = long_conversation(store)
    local = SmallLocal(answer)
    links = Connectivity()
    with refused_url() as url:
        if known_offline:
            links.record("dead", "connection_failed")
            links.record("dead", "connection_failed")
        routed = RoutedEngine(dead_cloud(url, store), lambda: local, links, hedge_after_s=None,
                              on_attempt=store.log_attempt)
        turn, events, message = run_auto_turn(store, routed, conversation_id)
    assert message.status is MessageStatus.COMPLETE and message.content == "Sure."
    assert (message.engine, message.model) == ("local", "small-local.gguf")
    assert message.route_reason.endswith("answered locally")
    assert_fitted_for_the_local_window(turn, events, local)
    # the Refit comes before the local model's first text
    kinds = [type(e) for e in events]
    assert kinds.index(Refit) < kinds.index(TextDelta)
    # the reply's meter is the prompt the local model was really sent
    assert message.prompt_tokens == turn.refit.prompt_tokens
    assert message.params["max_tokens"] == 8 and message.params["system_prompt"] == SYSTEM
    # kept with the reply: what the model that answered did not see, in its own window
    assert message.params["context_left_out"] == {"messages": 2, "turns": 1, "window": WINDOW}
    store.close()


def test_a_local_hedge_is_fitted_into_the_local_window(tmp_path):
    """The cloud holds its first token back past the hedge: the local model starts too, with
    the conversation fitted into its window, and wins."""
    store = Store(tmp_path / "outpost.db")
    conversation_id = long_conversation(store)
    local = SmallLocal(answer)
    with fault_server() as server:
        server.script([slow_first_token(delay=25.0)])
        routed = RoutedEngine(dead_cloud(server.url, store), lambda: local, Connectivity(),
                              hedge_after_s=0.2, on_attempt=store.log_attempt)
        turn, events, message = run_auto_turn(store, routed, conversation_id)
        assert server.wait_disconnected(0, timeout=10)  # the cloud's request was closed
    assert message.status is MessageStatus.COMPLETE and message.engine == "local"
    assert "answered locally" in message.route_reason
    assert_fitted_for_the_local_window(turn, events, local)
    store.close()


def test_a_continuation_is_fitted_into_the_local_window_with_room_for_the_whole_reply(
        tmp_path):
    """The cloud's stream breaks off mid-answer: the local model goes on from its text, the
    conversation fitted into the local window with room kept for the whole reply (the cloud's
    part, now the end of its prompt, and what is left)."""
    store = Store(tmp_path / "outpost.db")
    conversation_id = long_conversation(store)
    local = SmallLocal(answer)
    with fault_server() as server:
        server.script([Cut(chunks=("Seas", " and", " rivers", " meet"), after=2)])
        routed = RoutedEngine(dead_cloud(server.url, store), lambda: local, Connectivity(),
                              hedge_after_s=None, on_attempt=store.log_attempt)
        turn, events, message = run_auto_turn(store, routed, conversation_id)
    assert message.content == "Seas andSure." and message.status is MessageStatus.COMPLETE
    assert [(s["engine"], s["start"]) for s in message.segments] == [("dead", 0),
                                                                     ("local", 8)]
    kinds = [type(e) for e in events]
    assert kinds.index(Seam) < kinds.index(Refit)
    assert_fitted_for_the_local_window(turn, events, local)
    assert local.requests[-1].assistant_prefix == "Seas and"
    store.close()


def test_the_cli_answers_a_long_conversation_locally_when_the_provider_is_dead(
        outpost_home, monkeypatch, capsys):
    """`outpost ask --conversation C --provider dead --json` as the tester ran it, the scripted
    local model where the real one goes: the reply comes (exit 0), and the JSON says the turn
    was fitted for the cloud, then again for the local model, with what it leaves out."""
    local = SmallLocal(answer)
    monkeypatch.setattr("app.compose.create_local_engine", local.factory)
    store = Store()
    conversation_id = long_conversation(store)
    with refused_url() as url:
        assert cli.main(["providers", "add", "dead", "--base-url", url + "/v1",
                         "--model", "gpt-4o-mini"]) == 0
        capsys.readouterr()
        code = cli.main(["ask", "Summarize.", "--conversation", conversation_id,
                         "--provider", "dead", "--max-tokens", "8", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    contexts = [line for line in lines if line.get("event") == "context"]
    assert [(c["context_window"], c["dropped_messages"], c.get("engine")) for c in contexts] \
        == [(CLOUD_WINDOW, 0, None), (WINDOW, 2, "local")]
    assert contexts[1]["dropped_turns"] == [OLD_QUESTION[:80]]
    assert contexts[1]["prompt_tokens"] + 8 <= WINDOW
    [reply_row] = [m for m in store.messages(conversation_id)
                   if m.role is Role.ASSISTANT and m.content == "Sure."]
    assert reply_row.status is MessageStatus.COMPLETE and reply_row.engine == "local"
    assert reply_row.prompt_tokens == contexts[1]["prompt_tokens"]
    store.close()


def test_a_retry_the_local_model_takes_over_for_a_spent_quota_fits_its_window(outpost_home,
                                                                             tmp_path):
    """A turn built for the cloud failed (a bad request); by the retry the day's cloud tokens
    are spent, so under Auto the local model answers it (``_within_quota``): the saved request
    is fitted into the local window first, not sent as built for the cloud."""
    store = Store()
    ledger = UsageLedger(store, "ana")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", 20_000, by=Profile("admin", is_admin=True))
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    conversation_id = long_conversation(store)
    local = SmallLocal(answer)
    with fault_server() as server:
        cloud = dead_cloud(server.url, store)
        pipeline = TurnPipeline(service, FixedEngines(local, cloud))
        target = TurnTarget(provider="dead", route="auto")
        server.script([Status(400)])
        failed = pipeline.prepare("Summarize.", conversation_id, target=target,
                                  options=TurnOptions(max_tokens=8))
        [ended] = [e for e in failed.run(threading.Event()) if isinstance(e, TurnEnded)]
        assert ended.outcome.error is not None and local.requests == []
        assert failed.turn.fit.window == CLOUD_WINDOW and len(failed.turn.request.messages) == 6
        ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                    idempotency_key="elsewhere", provider="openai",
                                    model="gpt-4o-mini", kind="openai", prompt_tokens=19_000,
                                    completion_tokens=990))  # the day's cloud tokens spent
        retried = pipeline.retry(failed.turn, target=target)
        events = list(retried.run(threading.Event()))
        cloud.close()
    started = retried.started
    assert isinstance(started, TurnStarted) and started.engine.engine == "local"
    assert "daily token quota" in started.route_reason
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert ended.outcome.error is None and ended.outcome.message.content == "Sure."
    fit = retried.turn.fit
    assert fit.window == WINDOW and fit is started.fit
    assert [m.content for m in fit.dropped] == [OLD_QUESTION, OLD_ANSWER]
    assert local.requests[-1].messages == fit.messages
    assert fit.prompt_tokens + 8 <= WINDOW
    # the same turn, the same key
    assert retried.turn.request.idempotency_key == failed.turn.request.idempotency_key
    store.close()


def test_a_retry_still_says_what_its_first_fit_left_out(outpost_home):
    """A Local only turn that dropped the oldest turns failed; the retry is fitted again into
    the same window (nothing more to drop) and still says which turns are left out (it said
    none: the refit saw only what was already fitted)."""
    from app.domain.errors import EngineError

    store = Store()
    service = ChatService(store, Settings())
    conversation_id = long_conversation(store)
    local = SmallLocal(lambda request, cancel: [EngineError("The model crashed.")], answer)
    local.finish_loading()
    pipeline = TurnPipeline(service, FixedEngines(local, None))
    target = TurnTarget(route="local")
    failed = pipeline.prepare("Summarize.", conversation_id, target=target,
                              options=TurnOptions(max_tokens=8), wait_for_model=True)
    [ended] = [e for e in failed.run(threading.Event()) if isinstance(e, TurnEnded)]
    assert ended.outcome.error is not None
    assert [m.content for m in failed.turn.fit.dropped] == [OLD_QUESTION, OLD_ANSWER]
    retried = pipeline.retry(failed.turn, target=target)
    list(retried.run(threading.Event()))
    assert [m.content for m in retried.started.fit.dropped] == [OLD_QUESTION, OLD_ANSWER]
    assert retried.started.fit.describe_dropped() == failed.turn.fit.describe_dropped()
    store.close()


def test_best_of_n_answered_locally_still_says_what_the_window_left_out(tmp_path):
    """Best-of-n around Auto: each candidate is fitted into the local window by the router,
    and the turn says what was left out once (the candidates' wrapper dropped the Refit)."""
    from app.chat.candidates import CandidatesEngine
    from app.domain.test_time import Plan

    store = Store(tmp_path / "outpost.db")
    conversation_id = long_conversation(store)
    local = SmallLocal(answer, answer, answer)
    with refused_url() as url:
        routed = RoutedEngine(dead_cloud(url, store), lambda: local, Connectivity(),
                              hedge_after_s=None, on_attempt=store.log_attempt)
        turn = ChatService(store, Settings()).start_turn(
            "Summarize.", conversation_id, model=routed.info.model, counter=routed,
            effective_route="auto", options=TurnOptions(max_tokens=8, temperature=0.8))
        engine = CandidatesEngine(routed, Plan("best_of", 3, scorer="json"))
        try:
            events = list(turn.run(engine, threading.Event()))
        finally:
            engine.close()
    refits = [e for e in events if isinstance(e, Refit)]
    assert len(refits) == 1 and refits[0].fit.window == WINDOW
    assert [m.content for m in refits[0].fit.dropped] == [OLD_QUESTION, OLD_ANSWER]
    assert turn.refit == refits[0].fit
    store.close()
