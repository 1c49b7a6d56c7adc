"""The token meter reckons the prompt the send makes (user report): it counted the raw prompt,
the whole conversation, when the send leaves the oldest turns out to fit the window, and it
did not know the connection state: in Offline mode, or with the provider known to be
unreachable, the local model answers (or the message waits in the outbox), and the meter
still counted for the cloud and said nothing. Now it counts the fitted prompt (what the turn
the send starts says it fitted), says what is left out, and says where the message goes when
the connection state decides it, counted for the model that would answer. Real pipeline,
real SQLite store, a scripted local model; the cloud is never reached (its link is known to
be down, or its address refuses on loopback)."""
from __future__ import annotations

import re

from app.chat.connectivity import Connectivity
from app.chat.pipeline import TurnEnded, TurnPipeline, TurnStarted, TurnTarget
from app.chat.service import ChatService, TurnOptions, history_messages
from app.config.settings import Settings
from app.domain.context import LeftOut
from app.domain.messages import ChatMessage, Role, estimate_prompt_tokens
from app.storage.store import Store
from tests.fault_server import refused_url
from tests.support import FixedEngines, ScriptedEngine, fault_cloud, reply

OPTIONS = TurnOptions(max_tokens=40)
WORDS = "the keeper trimmed the lamp and wound the clockwork before the fog came in " * 2


class SmallModel(ScriptedEngine):
    """A local model with a small window: a few turns of this chat overflow it."""

    context_window = 160


def chat_with_history(pipeline: TurnPipeline, local: ScriptedEngine, turns: int = 4) -> str:
    """A conversation of ``turns`` long turns, answered locally; its id."""
    conversation_id = None
    for i in range(turns):
        local.script(reply(*WORDS.split(" ")[:12]))
        events = list(pipeline.send(f"Turn {i}: {WORDS}", conversation_id, options=OPTIONS))
        conversation_id = next(e for e in events if isinstance(e, TurnStarted)).conversation_id
    return conversation_id


def measured(pipeline, draft, conversation_id, target=TurnTarget(), local=None):
    job = pipeline.measure(draft, conversation_id, target=target, options=OPTIONS,
                           local=local)
    assert job is not None
    return job()


def unreachable(link: Connectivity, provider: str = "fault") -> None:
    """Two sends that could not connect: the provider is known to be unreachable."""
    link.record(provider, "connection_failed", send="one")
    link.record(provider, "connection_failed", send="two")


def test_the_meter_counts_the_prompt_as_the_send_fits_it(outpost_home):
    """Four long turns and a new message overflow a 160-token window: the send leaves the
    oldest turns out. The meter said the whole conversation (over the window, red); now it
    says what the send sends, and how many messages it leaves out."""
    store = Store()
    local = SmallModel()
    pipeline = TurnPipeline(ChatService(store, Settings()), FixedEngines(local))
    conversation_id = chat_with_history(pipeline, local)
    draft = f"And then? {WORDS}"
    meter = measured(pipeline, draft, conversation_id, local=local)
    whole = history_messages(Settings()["system_prompt"], store.branch(conversation_id))
    raw = estimate_prompt_tokens(whole + [ChatMessage(Role.USER, draft)])
    assert raw + OPTIONS.max_tokens > local.context_window  # (what it counted: over)
    local.script(reply("Fog."))
    events = list(pipeline.send(draft, conversation_id, options=OPTIONS))
    fit = next(e for e in events if isinstance(e, TurnStarted)).fit
    assert fit is not None and fit.dropped
    assert (meter.tokens, meter.exact, meter.window) == (fit.prompt_tokens, fit.exact, 160)
    assert meter.tokens + meter.max_tokens <= meter.window
    assert meter.left_out == LeftOut.of(fit).record()
    assert meter.goes is None
    store.close()


def test_a_message_that_cannot_fit_at_all_is_refused_in_the_sends_words(outpost_home):
    store = Store()
    local = SmallModel()
    pipeline = TurnPipeline(ChatService(store, Settings()), FixedEngines(local))
    meter = measured(pipeline, WORDS * 4, None, local=local)
    assert meter.refused is not None
    assert meter.refused.startswith("This message does not fit the model's context window "
                                    "of 160 tokens")
    assert meter.tokens + meter.max_tokens > meter.window  # (the gauge shows it over)
    store.close()


def test_auto_with_the_provider_unreachable_counts_for_the_local_model_and_says_so(
        outpost_home):
    """Auto, the provider known to be unreachable: the local model answers at once. The
    meter counted for the cloud model (its window, its cost) and said nothing; now it counts
    the prompt fitted again into the local model's window, as the router does, with no
    cost, and says who would answer; with send-when-online, that it waits in the outbox."""
    store = Store()
    local = SmallModel()
    with refused_url() as url:
        engines = FixedEngines(local, fault_cloud(url + "/v1", store))
        engines.connectivity = Connectivity()
        pipeline = TurnPipeline(ChatService(store, Settings()), engines)
        conversation_id = chat_with_history(pipeline, local)
        target = TurnTarget(provider="fault", route="auto", send_when_online=False)
        online = measured(pipeline, "And then?", conversation_id, target, local)
        assert online.goes is None and online.window != 160  # the cloud's (unknown) window
        unreachable(engines.connectivity)
        meter = measured(pipeline, "And then?", conversation_id, target, local)
        assert re.fullmatch(r"fault unreachable since \d\d:\d\d: the local model would "
                            r"answer this message\.", meter.goes or ""), meter.goes
        assert meter.window == 160 and meter.cost is None
        assert meter.tokens + meter.max_tokens <= 160 and meter.left_out is not None
        local.script(reply("Fog."))
        events = list(pipeline.send("And then?", conversation_id, target=target,
                                    options=OPTIONS))
        [ended] = [e for e in events if isinstance(e, TurnEnded)]
        assert ended.outcome.answered.engine == "local"
        sent = local.requests[-1].messages  # what the local model was given
        assert meter.tokens == local.count_prompt(sent)[0]
        queued = measured(pipeline, "And then?", conversation_id,
                          TurnTarget(provider="fault", route="auto", send_when_online=True),
                          local)
        assert queued.goes is not None and queued.goes.endswith(
            "the local model would answer this message. It also waits in the outbox for "
            "fault.")
        cloud_only = measured(pipeline, "And then?", conversation_id,
                              TurnTarget(provider="fault", route="cloud"), local)
        assert cloud_only.goes is not None and cloud_only.goes.endswith(
            ": sending tries it, and the message waits in the outbox if it still cannot be "
            "reached.")
        assert cloud_only.window != 160  # (the cloud answers, if it can)
    store.close()


def test_offline_mode_says_the_local_model_would_answer(outpost_home):
    store = Store()
    settings = Settings()
    local = SmallModel()
    with refused_url() as url:
        pipeline = TurnPipeline(ChatService(store, settings),
                                FixedEngines(local, fault_cloud(url + "/v1", store)))
        target = TurnTarget(provider="fault", route="auto")
        assert measured(pipeline, "Hello", None, target, local).goes is None
        settings.set("offline_mode", True)
        meter = measured(pipeline, "Hello", None, target, local)
        assert meter.goes == "Offline mode is on: the local model would answer this message."
        assert meter.window == 160
    store.close()
