"""Conversations are trees (issue 13, first step): a turn sees exactly the path from the root to the
message it answers, never a sibling: after a Retry, after a late outbox answer, after an edit
(a new user message beside the old one), and after switching branches. Asserted on the requests
the (scripted) engine received."""
from __future__ import annotations

import pytest

from app.chat.outbox_sender import OutboxSender
from app.chat.pipeline import TurnEnded, TurnPipeline, TurnTarget
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.errors import StreamInterrupted, UsageError
from app.domain.messages import Finished, FinishReason, Role, TextDelta, Usage
from app.storage.migrations import MIGRATIONS
from app.storage.outbox import Outbox
from app.storage.store import Store
from tests.support import FixedEngines, ScriptedEngine, reply

SYSTEM = "You are a helpful assistant."


def seen(engine: ScriptedEngine, turn: int = -1) -> list[str]:
    """The messages (after the system prompt) the engine was sent in a turn."""
    return [m.content for m in engine.requests[turn].messages if m.role is not Role.SYSTEM]


def ended(events) -> object:
    return next(e for e in events if isinstance(e, TurnEnded)).outcome


@pytest.fixture
def chat(outpost_home):
    store = Store()
    service = ChatService(store, Settings(), profile="ana")
    engine = ScriptedEngine()
    yield store, TurnPipeline(service, FixedEngines(engine)), engine
    store.close()


def test_after_a_retry_the_next_turn_sees_only_the_retried_answer(chat):
    store, pipeline, engine = chat
    broken = [TextDelta("Half an"), Usage(10, 2),
              Finished(FinishReason.ERROR, error=StreamInterrupted("The stream broke."))]
    engine.script(broken, reply("A whole answer."), reply("Fine."))
    first = ended(pipeline.send("Question one?"))
    assert first.message.status.value == "interrupted" and first.message.content == "Half an"
    retried = pipeline.retry(first.turn)
    list(retried.run(__import__("threading").Event()))
    conversation = first.conversation_id
    # the retry is a sibling of the broken reply, and the active path goes through it
    answers = [m for m in store.messages(conversation) if m.role is Role.ASSISTANT]
    assert [a.parent_id for a in answers] == [first.user_message_id] * 2
    assert [m.content for m in store.branch(conversation)] == ["Question one?",
                                                               "A whole answer."]
    list(pipeline.send("Question two?", conversation))
    assert seen(engine) == ["Question one?", "A whole answer.", "Question two?"]


def test_a_late_outbox_answer_is_a_sibling_and_the_next_turn_sees_one_answer(chat):
    store, pipeline, engine = chat
    engine.script(reply("The local answer."), reply("Next."))
    first = ended(pipeline.send("Question one?"))
    queued = pipeline.service.queue_for_later(first.turn, "acme", None)
    cloud = ScriptedEngine(reply("The cloud answer."))
    report = OutboxSender(Outbox(store), lambda provider, model: cloud).send()
    [(sent, answer)] = report.sent
    assert sent.id == queued.id and answer.parent_id == first.user_message_id
    # nothing came after the local answer: the cloud's is now the active one (2/2)
    conversation = first.conversation_id
    assert [m.content for m in store.branch(conversation)] == ["Question one?",
                                                               "The cloud answer."]
    assert [m.content for m in store.siblings(answer)] == ["The local answer.",
                                                           "The cloud answer."]
    list(pipeline.send("Question two?", conversation))
    assert seen(engine) == ["Question one?", "The cloud answer.", "Question two?"]


def test_an_outbox_answer_never_pulls_the_user_off_the_path_they_went_on_with(chat):
    store, pipeline, engine = chat
    engine.script(reply("The local answer."), reply("Two."), reply("Three."))
    first = ended(pipeline.send("Question one?"))
    pipeline.service.queue_for_later(first.turn, "acme", None)
    conversation = first.conversation_id
    list(pipeline.send("Question two?", conversation))
    cloud = ScriptedEngine(reply("The cloud answer."))
    OutboxSender(Outbox(store), lambda provider, model: cloud).send()
    list(pipeline.send("Question three?", conversation))
    assert seen(engine) == ["Question one?", "The local answer.", "Question two?", "Two.",
                            "Question three?"]
    assert len(store.messages(conversation)) == 7  # the cloud answer is kept, beside


def test_an_edited_message_is_a_new_branch_and_switching_back_restores_the_old_one(chat):
    store, pipeline, engine = chat
    engine.script(reply("A1"), reply("A2"), reply("A2 edited"), reply("A3"))
    first = ended(pipeline.send("Q1"))
    conversation = first.conversation_id
    second = ended(pipeline.send("Q2", conversation))
    # "edit Q2 and resend": a new user message beside Q2, following A1
    edited = ended(pipeline.send("Q2, better", conversation, reply_to=first.message_id))
    assert seen(engine) == ["Q1", "A1", "Q2, better"]
    assert store.get_message(edited.user_message_id).parent_id == first.message_id
    assert [m.content for m in store.branch(conversation)] == ["Q1", "A1", "Q2, better",
                                                               "A2 edited"]
    # switching to the old branch: the next turn sees it, not the edit
    path = store.set_active(conversation, second.user_message_id)
    assert [m.content for m in path] == ["Q1", "A1", "Q2", "A2"]
    list(pipeline.send("Q3", conversation))
    assert seen(engine) == ["Q1", "A1", "Q2", "A2", "Q3"]


def test_a_reply_to_a_message_of_another_conversation_is_refused_and_nothing_saved(chat):
    store, pipeline, engine = chat
    engine.script(reply("A"), reply("B"))
    one = ended(pipeline.send("In one"))
    two = ended(pipeline.send("In two"))
    before = len(store.messages(two.conversation_id))
    with pytest.raises(UsageError, match="no message"):
        pipeline.prepare("Crossed", two.conversation_id, reply_to=one.message_id)
    with pytest.raises(UsageError, match="needs its conversation"):
        pipeline.prepare("Nowhere", reply_to=one.message_id)
    assert len(store.messages(two.conversation_id)) == before


def test_deleting_the_active_leaf_moves_the_path_to_a_sibling_or_the_parent(chat):
    store, pipeline, engine = chat
    engine.script(reply("Kept."))
    first = ended(pipeline.send("Question?"))
    conversation = first.conversation_id
    empty = store.add_message(conversation, Role.ASSISTANT, "", parent_id=first.user_message_id)
    assert store.get_conversation(conversation).active_leaf_id == empty.id
    store.delete_empty_reply(empty.id)
    assert store.get_conversation(conversation).active_leaf_id == first.message_id
    lone = store.add_message(conversation, Role.ASSISTANT, "", parent_id=first.message_id)
    store.delete_empty_reply(first.message_id)  # has text: never deleted here
    store.delete_empty_reply(lone.id)
    assert store.get_conversation(conversation).active_leaf_id == first.message_id


def test_an_old_database_migrates_with_its_order_as_one_path(tmp_path):
    path = tmp_path / "outpost.db"
    before_trees = [m.__name__ for m in MIGRATIONS].index("m010_conversation_tree")
    old = Store(path, migrations=MIGRATIONS[:before_trees])  # as the app was before trees
    conversation = old.create_conversation("old")
    ids: list[str] = []
    rows = ((Role.USER, "Q1", None), (Role.ASSISTANT, "broken", 0),
            (Role.ASSISTANT, "retried", 0), (Role.USER, "Q2", -1), (Role.ASSISTANT, "A2", -1))
    for n, (role, text, parent) in enumerate(rows):
        # the old code set a user message's parent to the previous message and a reply's to its
        # user message (so a retry was already a sibling), and showed everything in time order
        ids.append(f"m{n}")
        old.db["messages"].insert({
            "id": ids[-1], "conversation_id": conversation.id, "role": role.value,
            "parent_id": None if parent is None else ids[parent] if parent == 0 else ids[-2],
            "content": text, "status": "complete", "tokens_estimated": 0,
            "created_at": f"2026-01-01T00:00:0{n}", "updated_at": f"2026-01-01T00:00:0{n}"})
    old.close()
    store = Store(path)
    assert "m010_conversation_tree" in store.applied_migrations()
    assert list((tmp_path / "backups").glob("*before-m010_conversation_tree*"))  # backed up
    everything = store.messages(conversation.id)
    assert [m.id for m in everything] == ids  # every message, in its order
    assert [m.content for m in store.branch(conversation.id)] == [
        "Q1", "broken", "retried", "Q2", "A2"]  # shown and sent as before: one path
    assert store.get_conversation(conversation.id).active_leaf_id == ids[-1]
    assert [m.content for m in store.search("retried")] == ["retried"]  # FTS still works
    store.close()


def test_the_token_meter_counts_the_active_path(chat):
    store, pipeline, engine = chat
    engine.script(reply("A1"), reply("A2"), reply("Short."))
    first = ended(pipeline.send("Q1"))
    conversation = first.conversation_id
    long_branch = ended(pipeline.send("x " * 4000, conversation))
    short = ended(pipeline.send("Q2", conversation, reply_to=first.message_id))
    measure = pipeline.measure("Q3", conversation, target=TurnTarget(), options=TurnOptions(),
                               local=engine)()
    store.set_active(conversation, long_branch.message_id)
    longer = pipeline.measure("Q3", conversation, target=TurnTarget(), options=TurnOptions(),
                              local=engine)()
    assert short.error is None and longer.tokens > measure.tokens + 1000


def test_deleting_a_message_takes_its_subtree_and_moves_the_active_path(chat):
    store, pipeline, engine = chat
    engine.script(reply("A1"), reply("A2"), reply("A2 edited"))
    first = ended(pipeline.send("Q1"))
    conversation = first.conversation_id
    second = ended(pipeline.send("Q2", conversation))
    edited = ended(pipeline.send("Q2, better", conversation, reply_to=first.message_id))
    pipeline.service.queue_for_later(edited.turn, "acme", None)
    deleted = store.delete_subtree(edited.user_message_id)
    assert set(deleted) == {edited.user_message_id, edited.message_id}
    # the active path went through it: it now ends on the remaining sibling's branch
    assert [m.content for m in store.branch(conversation)] == ["Q1", "A1", "Q2", "A2"]
    assert [i.state.value for i in Outbox(store).pending()] == []  # its request is not sent
    store.delete_subtree(second.user_message_id)
    assert [m.content for m in store.branch(conversation)] == ["Q1", "A1"]
    store.delete_subtree(first.user_message_id)
    assert store.branch(conversation) == [] and store.messages(conversation) == []
    with pytest.raises(UsageError):
        store.delete_subtree(first.user_message_id)


@pytest.mark.local_model
def test_a_new_branch_on_the_local_model_reuses_the_shared_prefix_of_the_kv_cache(
        outpost_home, local_engine):
    """Branching (an edit) shares the path up to the branch point with the turn before it: the
    local model evaluates only what differs (whole 128-token chunks of the earlier prompt)."""
    store = Store()
    pipeline = TurnPipeline(ChatService(store, Settings(), profile="ana"),
                            FixedEngines(local_engine))
    options = TurnOptions(max_tokens=4, temperature=0.0)
    background = "The lighthouse keeper logs the weather every hour. " * 40  # ~400 tokens
    first = ended(pipeline.send(background + "What does the keeper log?", options=options))
    conversation = first.conversation_id
    second = ended(pipeline.send("And at night?", conversation, options=options))
    assert second.error is None
    branch = ended(pipeline.send("And in winter?", conversation, options=options,
                                 reply_to=first.message_id))
    assert branch.error is None
    assert branch.message.cached_prompt_tokens >= 256  # the shared path was not evaluated again
    assert branch.message.cached_prompt_tokens < branch.message.prompt_tokens
    store.close()


def test_a_best_of_candidate_can_be_kept_as_a_version_of_its_own(chat):
    from app.domain.test_time import Plan

    store, pipeline, engine = chat
    engine.script(reply("Alpha"), reply("Beta"), reply("Gamma"), reply("Next."))
    target = TurnTarget(test_time=Plan("best_of", 3, scorer="json"))
    first = ended(pipeline.send("Pick one", target=target,
                                options=TurnOptions(temperature=0.8)))
    shown = first.message.content
    losers = [c for c in first.message.candidates["candidates"] if c["text"] != shown]
    kept = store.keep_candidate(first.message_id, losers[0]["index"])
    assert kept.parent_id == first.user_message_id and kept.content == losers[0]["text"]
    assert [m.content for m in store.siblings(kept)] == [shown, kept.content]
    list(pipeline.send("Go on", first.conversation_id))
    assert seen(engine) == ["Pick one", kept.content, "Go on"]
    with pytest.raises(UsageError, match="no candidate 9"):
        store.keep_candidate(first.message_id, 9)


def test_the_first_message_can_be_edited_into_a_new_root(chat):
    from app.chat.service import NEW_ROOT

    store, pipeline, engine = chat
    engine.script(reply("A1"), reply("A1 again"))
    first = ended(pipeline.send("Q1"))
    conversation = first.conversation_id
    again = ended(pipeline.send("Q1, better", conversation, reply_to=NEW_ROOT))
    assert seen(engine) == ["Q1, better"]  # nothing of the old start
    new_root = store.get_message(again.user_message_id)
    assert new_root.parent_id is None
    assert [m.content for m in store.siblings(new_root)] == ["Q1", "Q1, better"]
    assert [m.content for m in store.branch(conversation)] == ["Q1, better", "A1 again"]
