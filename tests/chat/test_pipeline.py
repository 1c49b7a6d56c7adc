"""The turn pipeline (``app.chat.pipeline``) is the whole of a turn: a third front end needs no
routing, engine or outbox code of its own. Proved by driving it directly with a scripted engine and
comparing the rows it stores with those of the CLI path (``outpost ask``), given the same engine."""
from __future__ import annotations

import threading

import pytest

from app import cli
from app.chat.pipeline import (
    ModelLoading,
    Notice,
    Queued,
    RateLimitWait,
    TurnEnded,
    TurnPipeline,
    TurnStarted,
    TurnTarget,
)
from app.chat.service import ChatService, TurnOptions
from app.compose import build_service
from app.config.settings import Settings
from app.domain.errors import Cancelled, NoProviderForCloud
from app.domain.messages import Finished, TextDelta, Usage
from app.storage.ledger import UsageLedger
from app.storage.profiles import Profile
from app.storage.quotas import QuotaBook, QuotaGuard, RateLimitedLocally
from app.storage.store import Store
from tests.support import Clock, FixedEngines, ScriptedEngine, held_open, reply

SCRIPT = ("The", " sea", " is", " wide", ".")


def stored_rows(store: Store, conversation_id: str) -> dict:
    """What a turn leaves in the database, without ids, times and the turn's random key."""
    conversation = store.get_conversation(conversation_id)
    messages = []
    for m in store.messages(conversation_id):
        row = m.as_dict()
        for name in ("id", "conversation_id", "parent_id", "created_at", "updated_at"):
            row.pop(name)
        if row["params"]:
            row["params"] = {k: v for k, v in row["params"].items() if k != "idempotency_key"}
        messages.append(row)
    ledger = [{k: v for k, v in r.items() if k in (
        "provider", "model", "outcome", "prompt_tokens", "completion_tokens", "route", "profile",
        "cost_usd")} for r in store.request_log() if r["conversation_id"] == conversation_id]
    return {"title": conversation.title, "route": conversation.route,
            "sampling": conversation.sampling, "messages": messages, "ledger": ledger}


def test_a_third_front_end_stores_what_the_cli_stores(outpost_home, monkeypatch, capsys):
    # the CLI path, with the scripted engine where the real model would be
    cli_engine = ScriptedEngine(reply(*SCRIPT))
    monkeypatch.setattr("app.compose.create_local_engine", cli_engine.factory)
    assert cli.main(["ask", "--max-tokens", "20", "--temperature", "0.5", "Tell me"]) == 0
    assert capsys.readouterr().out == "The sea is wide.\n"
    store = Store()
    [via_cli] = [c.id for c in store.list_conversations()]

    # a new front end: the composition root's service and the pipeline, nothing else
    service = build_service(store, Settings(), store.list_conversations()[0].profile)
    engine = ScriptedEngine(reply(*SCRIPT))
    engine.on_attempt = service.ledger.record  # as the composition root wires the model
    pipeline = TurnPipeline(service, FixedEngines(engine))
    events = list(pipeline.send("Tell me", options=TurnOptions(max_tokens=20, temperature=0.5)))
    started = next(e for e in events if isinstance(e, TurnStarted))
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The sea is wide."
    assert ended.outcome.error is None and ended.outcome.message.content == "The sea is wide."
    assert ended.outcome.answered.engine == "local"
    assert [type(e) for e in events][-3:] == [Usage, Finished, TurnEnded]

    cli_rows = stored_rows(store, via_cli)
    new_rows = stored_rows(store, started.conversation_id)
    assert len(cli_rows["ledger"]) == 1 and len(store.request_log()) == 2
    assert [m["content"] for m in cli_rows["messages"]] == ["Tell me", "The sea is wide."]
    assert cli_rows == new_rows
    assert new_rows["messages"][1]["route_reason"] == "no cloud provider chosen"
    store.close()


def test_the_outcome_is_typed_and_the_error_is_the_exception(outpost_home):
    store = Store()
    service = build_service(store, Settings(), "ana")
    engine = ScriptedEngine(held_open("Part"), ready=False)
    pipeline = TurnPipeline(service, FixedEngines(engine))
    cancel = threading.Event()
    events = pipeline.send("Hi", cancel=cancel)
    assert isinstance(next(events), TurnStarted)  # saved before anything is sent
    assert isinstance(next(events), ModelLoading)  # the model is still loading
    engine.finish_loading()
    assert next(events) == TextDelta("Part")
    cancel.set()
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert isinstance(ended.outcome.error, Cancelled)
    assert ended.outcome.message.status.value == "interrupted"
    assert ended.outcome.message.content == "Part"
    store.close()


def test_cloud_only_without_a_provider_is_refused_before_anything_is_saved(outpost_home):
    store = Store()
    service = build_service(store, Settings(), "ana")
    pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine()))
    with pytest.raises(NoProviderForCloud):
        pipeline.prepare("Hi", target=TurnTarget(route="cloud"))
    assert store.list_conversations() == []
    store.close()


def one_request_a_minute(tmp_path):
    """A store, a virtual clock and a service whose profile may send one request a minute
    (local ones counted)."""
    store = Store()
    clock = Clock()
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    admin = Profile("admin", is_admin=True)
    book.set("ana", "requests_per_minute", 1, by=admin)
    book.set("ana", "count_local", True, by=admin)
    ledger = UsageLedger(store, "ana")
    service = ChatService(store, Settings(), ledger=ledger,
                          quotas=QuotaGuard(book, ledger, clock=clock), profile="ana")
    return store, clock, service


def test_a_local_rate_limit_is_waited_out_when_the_caller_asks(outpost_home, tmp_path):
    """``outpost ask`` with rate_limit_wait: RateLimitWait once a second, then the turn goes;
    without it the turn is refused and nothing is saved. Virtual clock: no real waiting."""
    store, clock, service = one_request_a_minute(tmp_path)
    paused: list[float] = []

    def pause(cancel, seconds):
        paused.append(seconds)
        clock.now += seconds
        return False

    engine = ScriptedEngine(reply("One"), reply("Two"))
    pipeline = TurnPipeline(service, FixedEngines(engine), clock=clock, pause=pause)
    assert [e for e in pipeline.send("First") if isinstance(e, TurnEnded)][0].outcome.error is None
    with pytest.raises(RateLimitedLocally):
        pipeline.prepare("Second")
    assert len(store.list_conversations()) == 1  # refused: nothing saved
    events = list(pipeline.send("Second", wait_on_rate_limit=True))
    waits = [e for e in events if isinstance(e, RateLimitWait)]
    assert waits[0].seconds_left == pytest.approx(60.0)
    assert [round(w.seconds_left) for w in waits] == list(range(60, 0, -1))
    assert sum(paused) == pytest.approx(60.0)
    assert isinstance(events[len(waits)], TurnStarted)  # saved only once the wait is over
    assert events[-1].outcome.message.content == "Two"
    store.close()


def test_stopping_while_waiting_for_a_rate_limit_sends_nothing(outpost_home, tmp_path):
    store, clock, service = one_request_a_minute(tmp_path)
    engine = ScriptedEngine(reply("One"), reply("Two"))
    pipeline = TurnPipeline(service, FixedEngines(engine), clock=clock,
                            pause=lambda cancel, seconds: True)  # the user stopped it
    list(pipeline.send("First"))
    with pytest.raises(Cancelled, match="nothing was sent"):
        list(pipeline.send("Second", wait_on_rate_limit=True))
    assert len(store.list_conversations()) == 1 and len(engine.requests) == 1
    store.close()


class NoLocalModel(FixedEngines):
    """An engine source with a cloud engine and no local model (none loaded)."""

    def local(self, model=None):
        from app.domain.errors import ModelError

        raise ModelError("No model is loaded.")


def auto_under_a_half_spent_day(tmp_path, count_local: bool, used: int = 500,
                                settings: Settings | None = None, tag: str = ""):
    """ana has used 500 (``used``) of her 1,000 cloud tokens today (``count_local``: local
    ones count), in a database and a quota file of its own (``tag``: one more of each)."""
    from engines.http_policy import AttemptRecord

    store = Store(tmp_path / f"outpost-{count_local}-{used}{tag}.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / f"quotas-{count_local}-{used}{tag}.json")
    admin = Profile("admin", is_admin=True)
    book.set("ana", "cloud_tokens_per_day", 1000, by=admin)
    book.set("ana", "count_local", count_local, by=admin)
    ledger = UsageLedger(store, "ana")
    ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                idempotency_key="earlier", provider="fault",
                                model="test-model", kind="openai", prompt_tokens=used // 2,
                                completion_tokens=used - used // 2))
    service = ChatService(store, settings or Settings(), ledger=ledger,
                          quotas=QuotaGuard(book, ledger), profile="ana")
    return store, service


AUTO = TurnTarget(provider="fault", route="auto")


def test_auto_answers_locally_in_full_rather_than_a_cloud_reply_a_budget_would_cut_short(
        outpost_home, tmp_path):
    """Auto, 800 tokens asked, the day's cloud tokens left for about 490: the local model,
    which the budget does not count, answers with all 800, and the turn says why. Nothing
    reaches the provider, and nothing was taken from the day."""
    from tests.fault_server import fault_server
    from tests.support import fault_cloud

    store, service = auto_under_a_half_spent_day(tmp_path, count_local=False)
    local = ScriptedEngine(reply(*SCRIPT))
    with fault_server() as server:
        pipeline = TurnPipeline(service, FixedEngines(local, fault_cloud(server.url, store)))
        events = list(pipeline.send("Tell me", target=AUTO,
                                    options=TurnOptions(max_tokens=800)))
        assert server.chat_requests() == []
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    outcome = ended.outcome
    assert outcome.error is None and outcome.answered.engine == "local"
    assert [r.max_tokens for r in local.requests] == [800]
    assert outcome.route_reason.startswith("fault: daily token quota would limit the reply "
                                           "to ")
    assert outcome.route_reason.endswith(" tokens (800 asked): answered locally")
    [notice] = [e.text for e in events if isinstance(e, Notice)]
    assert notice.startswith("ana's daily token quota would limit the reply to ")
    assert notice.endswith("(800 asked). The local model answers this message.")
    assert "reply_cap" not in outcome.message.params
    store.close()


def test_auto_keeps_the_limited_cloud_reply_when_the_local_model_counts_or_is_not_there(
        outpost_home, tmp_path):
    """The same budget, but local tokens count toward it (``count_local``), or no local
    model is loaded: the cloud answers, its reply limited as before, and says so."""
    from tests.fault_server import fault_server
    from tests.support import fault_cloud

    for count_local, engines in ((True, FixedEngines), (False, NoLocalModel)):
        store, service = auto_under_a_half_spent_day(tmp_path, count_local=count_local)
        local = ScriptedEngine(reply(*SCRIPT))
        with fault_server() as server:
            pipeline = TurnPipeline(service, engines(local, fault_cloud(server.url, store)))
            events = list(pipeline.send("Tell me", target=AUTO,
                                        options=TurnOptions(max_tokens=800)))
            [sent] = server.chat_requests()
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        assert ended.outcome.answered.engine != "local" and local.requests == []
        assert 16 <= sent.json["max_tokens"] < 500
        assert ended.outcome.message.params["reply_cap"]["asked"] == 800
        assert any(isinstance(e, Notice) and "reply limited to" in e.text for e in events)
        store.close()


def test_offline_mode_queues_a_send_when_online_message_whatever_the_cloud_budget_says(
        outpost_home, tmp_path):
    """Offline mode, `ask --provider fault --send-when-online`, and a cloud budget that would
    limit the reply (500 of 1,000 used) or is spent (1,000 of 1,000): nothing is sent now, so
    the budget holds nothing back. The local model answers in full, and the message waits in
    the outbox for fault as asked (its quotas are checked when it goes)."""
    from tests.fault_server import fault_server
    from tests.support import fault_cloud

    settings = Settings()
    settings.set("offline_mode", True)
    held = TurnTarget(provider="fault", route="auto", send_when_online=True,
                      outbox_asked=True)
    for used in (500, 1000):
        store, service = auto_under_a_half_spent_day(tmp_path, count_local=False, used=used,
                                                     settings=settings)
        local = ScriptedEngine(reply(*SCRIPT))
        with fault_server() as server:
            pipeline = TurnPipeline(service, FixedEngines(local, fault_cloud(server.url, store)))
            events = list(pipeline.send("Tell me", target=held,
                                        options=TurnOptions(max_tokens=800)))
            assert server.chat_requests() == []
        started = next(e for e in events if isinstance(e, TurnStarted))
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        assert started.held_offline and ended.outcome.error is None
        assert ended.outcome.answered.engine == "local"
        assert [r.max_tokens for r in local.requests] == [800]
        [queued] = [e for e in events if isinstance(e, Queued)]
        assert queued.answered_locally and ended.outcome.queued == queued.item
        [item] = service.outbox.pending()
        assert (item.provider, item.request.max_tokens) == ("fault", 800)
        assert not [e for e in events if isinstance(e, Notice)]  # no budget fallback to tell
        store.close()


def test_auto_with_send_when_online_and_a_budget_says_whether_the_message_is_queued(
        outpost_home, tmp_path):
    """Auto with send-when-online, a budget that would limit the cloud's reply: the local
    model answers in full either way. A provider the link tracker knows to be unreachable is
    not asked, and the message waits in the outbox for it, as it would have had the cloud been
    tried; one not known to be unreachable is not asked either (the budget kept the message
    from it), so nothing is queued, and the notice says so."""
    from app.chat.connectivity import Connectivity
    from tests.fault_server import fault_server
    from tests.support import fault_cloud

    target = TurnTarget(provider="fault", route="auto", send_when_online=True)
    for known_down in (False, True):
        store, service = auto_under_a_half_spent_day(tmp_path, count_local=False,
                                                     tag=f"-{known_down}")
        local = ScriptedEngine(reply(*SCRIPT))
        with fault_server() as server:
            engines = FixedEngines(local, fault_cloud(server.url, store))
            if known_down:
                engines.connectivity = Connectivity()
                for _ in range(2):  # unreachable twice in a row: offline
                    engines.connectivity.record("fault", "connection_failed")
            pipeline = TurnPipeline(service, engines)
            events = list(pipeline.send("Tell me", target=target,
                                        options=TurnOptions(max_tokens=800)))
            assert server.chat_requests() == []
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        assert ended.outcome.error is None and ended.outcome.answered.engine == "local"
        assert [r.max_tokens for r in local.requests] == [800]
        queued = [e.item for e in events if isinstance(e, Queued)]
        notices = [e.text for e in events if isinstance(e, Notice)]
        if known_down:
            assert queued == [ended.outcome.queued] and len(queued) == 1
            assert queued[0].request.max_tokens == 800
            assert ended.outcome.route_reason.startswith("fault unreachable since ")
            assert notices == []
        else:
            assert queued == [] and service.outbox.pending() == []
            [notice] = notices
            assert notice.endswith("The local model answers this message. It is not put in "
                                   "the outbox for fault: a budget, not the network, kept it "
                                   "from the cloud.")
        store.close()


def test_a_message_held_for_the_outbox_is_charged_to_the_rate_limits_once(outpost_home,
                                                                          tmp_path):
    """One cloud request a minute, Offline mode, `--send-when-online`: the held message sends
    nothing now, so the per-minute limit is not charged for it; when Offline mode is off, the
    outbox sends it within that minute (charged then, once). Virtual clock: no waiting."""
    from app.chat.outbox_sender import OutboxSender
    from app.storage.outbox import OutboxState
    from tests.fault_server import fault_server, normal
    from tests.support import fault_cloud

    store, clock = Store(), Clock()
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "requests_per_minute", 1, by=Profile("admin", is_admin=True))
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger, clock=clock)
    settings = Settings()
    settings.set("offline_mode", True)
    service = ChatService(store, settings, ledger=ledger, quotas=guard, profile="ana")
    with fault_server() as server:
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply(*SCRIPT)),
                                                      fault_cloud(server.url, store)))
        events = list(pipeline.send("Tell me", target=TurnTarget(
            provider="fault", route="auto", send_when_online=True, outbox_asked=True)))
        [item] = [e.item for e in events if isinstance(e, Queued)]
        settings.set("offline_mode", False)
        server.script([normal()])
        sender = OutboxSender(service.outbox, lambda name, model: fault_cloud(server.url, store),
                              ledger=ledger, quotas=guard, default_profile=lambda: "ana")
        report = sender.send()
        assert len(server.chat_requests()) == 1
    assert [i.id for i, _ in report.sent] == [item.id], report.waiting
    assert service.outbox.get(item.id).state is OutboxState.SENT
    store.close()


def test_offline_mode_leaves_a_provider_on_this_computer_to_its_route(outpost_home):
    """Offline mode opens no connection beyond this computer; a provider on it (loopback: an
    Ollama or llama.cpp server of the user's) answers as its route says (it was never asked:
    Offline mode made every turn local). One elsewhere is kept from it: the local model
    answers, and a turn naming it is the kind the outbox holds until Offline mode is off."""
    from app.domain.routes import Route
    from engines.http_policy import AttemptRecord
    from tests.fault_server import Normal, fault_server
    from tests.support import fault_cloud

    settings = Settings()
    settings.set("offline_mode", True)
    target = TurnTarget(provider="fault", route="cloud")
    for here in (True, False):
        store = Store()
        service = ChatService(store, settings)
        local = ScriptedEngine(reply(*SCRIPT))
        with fault_server() as server:
            server.script([Normal(chunks=("Here", "."))])
            pipeline = TurnPipeline(service, FixedEngines(local, fault_cloud(server.url, store),
                                                          here=here))
            assert pipeline.effective_route(target, None) is (Route.CLOUD if here
                                                              else Route.LOCAL)
            assert pipeline.held_by_offline_mode(target, None) is not here
            events = list(pipeline.send("Who answers?", target=target))
            asked = len(server.chat_requests())
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        started = next(e for e in events if isinstance(e, TurnStarted))
        assert started.offline_mode_overrode is not here
        if here:
            assert asked == 1 and ended.outcome.answered.engine != "local"
            assert ended.outcome.message.content == "Here." and local.requests == []
        else:
            assert asked == 0 and ended.outcome.answered.engine == "local"
            assert ended.outcome.route_reason == "offline mode"
        store.close()


def test_the_meter_checks_the_quotas_as_the_send_does_and_reserves_nothing(outpost_home,
                                                                           tmp_path):
    """The token meter's count runs the send's own quota check, dry: ana has 500 of her
    1,000 cloud tokens left today, 800 asked. The meter shows the reply limited to what the
    send then asks for, and the cost bound for that many; checking reserves nothing (no
    hold, a real check after it finds the same room). Once the day is spent it says, in the
    quota's words, that the send would be refused; under Auto that the local model would
    answer. (Before, it showed 800 for the reply, its cost, and no refusal.)"""
    from app.config.providers import ProviderConfig
    from engines.openai_compat import OpenAICompatEngine
    from engines.http_policy import AttemptRecord
    from tests.fault_server import Normal, fault_server

    store, service = auto_under_a_half_spent_day(tmp_path, count_local=False)
    cloud_target = TurnTarget(provider="fault", model="gpt-4o-mini", route="cloud")
    options = TurnOptions(max_tokens=800)
    with fault_server() as server:
        cloud = OpenAICompatEngine(ProviderConfig("fault", "openai", server.url + "/v1",
                                                  "gpt-4o-mini"), "sk-test")
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply(*SCRIPT)), cloud))

        def measure(target=cloud_target):
            job = pipeline.measure("Tell me", None, target=target, options=options,
                                   local=None)
            assert job is not None
            return job()

        meter = measure()
        assert (meter.asked, meter.limit) == (800, "daily token quota")
        assert meter.max_tokens == 500 - meter.tokens and meter.refused is None
        assert meter.cost == cloud.estimate_cost(meter.tokens, meter.max_tokens)
        assert meter.cost != cloud.estimate_cost(meter.tokens, 800)
        assert store.db.execute("SELECT COUNT(*) FROM quota_holds").fetchone()[0] == 0
        assert measure() == meter  # nothing was taken by the first look
        server.script([Normal(chunks=("Hi",))])
        list(pipeline.send("Tell me", target=cloud_target, options=options))
        [sent] = server.chat_requests()
        assert sent.json["max_tokens"] == meter.max_tokens  # what the meter said
    service.ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0,
                                        error_kind=None, idempotency_key="later",
                                        provider="fault", model="gpt-4o-mini", kind="openai",
                                        prompt_tokens=500, completion_tokens=0))
    refused = measure()
    assert refused.refused is not None and refused.refused.startswith(
        "Daily token quota reached for ana: ")
    assert refused.refused.endswith("switch this chat to Local only.")
    auto = measure(TurnTarget(provider="fault", model="gpt-4o-mini", route="auto"))
    assert auto.refused is None and auto.instead is not None
    assert auto.instead.startswith("Daily token quota reached for ana: ")
    assert auto.instead.endswith("The local model would answer this message.")
    store.close()
