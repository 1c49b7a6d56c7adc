"""A message holding one of the user's own API keys (pasted by mistake) is refused before it is
stored or sent, naming whose key it is and never quoting it: a new message, an edit, a
regenerate, an item waiting in the outbox, and ``outpost ask``.

Keys are stored as the user stores them (``keep_key``: the real OS keychain where there is one,
else the ``keys.json`` opt-in); the database is a real SQLite file, the provider the fault
server on loopback, the CLI a real subprocess (a fresh process: the keys come from the keychain
or the file, not from this process's memory)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.chat.outbox_sender import OutboxSender
from app.chat.service import NEW_ROOT, ChatService, TurnOptions
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.secrets import keychain
from app.config.settings import Settings
from app.domain.errors import KeyInMessage
from app.domain.messages import Role
from app.storage.outbox import OutboxState
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import fault_server, normal
from tests.support import files_holding

# each test its own keys: a key this process handled stays known to it (app.domain.secrets_mask)
NEW_KEY = "sk-pasted-new-message-7c6b5a4d3e2f1a0b"
EDIT_KEY = "sk-pasted-edit-9a8b7c6d5e4f3a2b1c0d"
ENV_KEY = "sk-pasted-environment-0f1e2d3c4b5a6978"
OLD_KEY = "sk-pasted-before-the-check-55aa66bb77cc"
OUTBOX_KEY = "sk-pasted-outbox-item-1234abcd5678ef90"
CLI_KEY = "sk-pasted-cli-ask-ffee00dd11cc22bb33aa"
SPLIT_KEY = "sk-pasted-split-in-two-0a1b2c3d4e5f6a7b"
SYSTEM_KEY = "sk-pasted-system-prompt-local-8e7d6c5b4a"
DEFAULT_KEY = "sk-pasted-default-system-prompt-3c2b1a09"


def cloud_provider(name: str = "acme", url: str = "http://127.0.0.1:9/v1") -> None:
    ProviderRegistry().add(ProviderConfig(name, "openai", url, "test-model"), replace=True)


def test_a_new_message_with_a_stored_key_is_refused_before_anything_is_saved(
        store, db_path, keep_key):
    cloud_provider()
    keep_key("acme", NEW_KEY)
    service = ChatService(store, Settings())
    with pytest.raises(KeyInMessage) as refused:
        service.start_turn(f"Why is {NEW_KEY} refused?", model="test-model",
                           effective_route="cloud")
    assert str(refused.value) == (
        "The message contains your API key for acme; remove the key and send the message "
        "again (nothing was saved or sent).")
    assert store.list_conversations() == [] and files_holding(db_path, NEW_KEY) == []
    # without the key the same message goes
    turn = service.start_turn("Why is my key refused?", model="test-model",
                              effective_route="cloud")
    assert [m.content for m in store.messages(turn.conversation_id)] == [
        "Why is my key refused?"]


def test_a_key_split_across_lines_is_refused_too(store, db_path, keep_key):
    """A paste or a terminal may break the key with a newline or a space: still the key."""
    cloud_provider()
    keep_key("acme", SPLIT_KEY)
    service = ChatService(store, Settings())
    for split in (f"{SPLIT_KEY[:15]}\n{SPLIT_KEY[15:]}", f"{SPLIT_KEY[:9]} {SPLIT_KEY[9:]}"):
        with pytest.raises(KeyInMessage, match="^The message contains your API key for acme"):
            service.start_turn(f"Is this right?\n{split}", model="test-model",
                               effective_route="cloud")
    assert store.list_conversations() == [] and files_holding(db_path, SPLIT_KEY[15:]) == []


def test_an_edit_with_a_key_is_refused_and_the_tree_is_unchanged(store, db_path, keep_key):
    cloud_provider()
    service = ChatService(store, Settings())
    first = service.start_turn("What does error 401 mean?", model="test-model",
                               effective_route="cloud")
    keep_key("acme", EDIT_KEY)
    before = [(m.id, m.parent_id, m.content) for m in store.messages(first.conversation_id)]
    with pytest.raises(KeyInMessage, match="^The message contains your API key for acme"):
        service.start_turn(f"What does error 401 mean with {EDIT_KEY}?", first.conversation_id,
                           model="test-model", effective_route="auto", reply_to=NEW_ROOT)
    after = [(m.id, m.parent_id, m.content) for m in store.messages(first.conversation_id)]
    assert after == before and files_holding(db_path, EDIT_KEY) == []


def test_local_only_checks_the_keys_known_without_opening_the_keychain(store, monkeypatch):
    """A Local only turn opens no socket, D-Bus's included: the environment's key is still
    found, and the keychain is never asked."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)

    def no_keychain():
        pytest.fail("a Local only turn asked the keychain")

    monkeypatch.setattr("app.config.secrets.keychain", no_keychain)
    service = ChatService(store, Settings())
    with pytest.raises(KeyInMessage, match="contains your API key from OPENAI_API_KEY;"):
        service.start_turn(f"export OPENAI_API_KEY={ENV_KEY}", model="local.gguf",
                           effective_route="local")
    assert store.list_conversations() == []


def test_a_new_system_prompt_with_a_key_is_refused_on_a_local_only_turn_too(store, db_path,
                                                                           monkeypatch):
    """A Local only turn sends nothing, but it would keep the system prompt on disk: refused
    as on a cloud route (``ask --system``, the window's new chat), the keychain left alone."""
    monkeypatch.setenv("OPENAI_API_KEY", SYSTEM_KEY)
    monkeypatch.setattr("app.config.secrets.keychain",
                        lambda: pytest.fail("a Local only turn asked the keychain"))
    service = ChatService(store, Settings())
    with pytest.raises(KeyInMessage) as refused:
        service.start_turn("Hello", model="local.gguf", effective_route="local",
                           options=TurnOptions(system_prompt=f"Use {SYSTEM_KEY}."))
    assert str(refused.value) == ("The system prompt contains your API key from OPENAI_API_KEY;"
                                  " remove the key from it (nothing was saved or sent).")
    assert store.list_conversations() == [] and files_holding(db_path, SYSTEM_KEY) == []


@pytest.mark.parametrize("route", ["local", "cloud"])
def test_a_default_system_prompt_with_a_key_is_refused_naming_the_setting(store, db_path,
                                                                          monkeypatch, route):
    """A new chat takes Settings' default system prompt: a Local only turn kept it on disk
    unchecked (and a cloud turn refused it as "the system prompt of this conversation", which
    does not exist yet). Refused on every route, saying where to remove the key."""
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_KEY)
    settings = Settings()
    settings.set("system_prompt", f"Answer briefly. My key is {DEFAULT_KEY}.")
    service = ChatService(store, settings)
    with pytest.raises(KeyInMessage) as refused:
        service.start_turn("Hello", model="test-model", effective_route=route)
    assert str(refused.value) == (
        "The default system prompt (Settings ▸ General ▸ System prompt) contains your API key "
        "from OPENAI_API_KEY; remove the key from it there (nothing was saved or sent).")
    assert store.list_conversations() == [] and files_holding(db_path, DEFAULT_KEY) == []
    # the window's new chat passes the panel's system prompt: the default, unchanged
    with pytest.raises(KeyInMessage, match="^The default system prompt "):
        service.start_turn("Hello", model="test-model", effective_route=route,
                           options=TurnOptions(system_prompt=settings["system_prompt"]))
    # a chat that has its own system prompt does not take the default
    turn = service.start_turn("Hello", model="test-model", effective_route=route,
                              options=TurnOptions(system_prompt="Answer briefly."))
    assert store.get_conversation(turn.conversation_id).system_prompt == "Answer briefly."


def test_a_key_already_in_the_history_is_not_sent_again(store, keep_key):
    """A message stored before messages were checked (or a key stored since) is in what every
    later cloud turn would send: refused, saying so; a Local only turn sends nothing."""
    cloud_provider()
    service = ChatService(store, Settings())
    first = service.start_turn(f"My key is {OLD_KEY}.", model="test-model",
                               effective_route="local")  # not a key of the user's yet
    reply = store.add_message(first.conversation_id, Role.ASSISTANT, "Noted.",
                              parent_id=first.user_message_id)
    keep_key("acme", OLD_KEY)
    with pytest.raises(KeyInMessage, match="^A message in this conversation contains your API "
                                           "key for acme, and it would be sent"):
        service.start_turn("And now?", first.conversation_id, model="test-model",
                           effective_route="auto")
    with pytest.raises(KeyInMessage, match="^A message in this conversation"):
        service.regenerate_turn(reply.id, model="test-model", effective_route="cloud")
    assert len(store.messages(first.conversation_id)) == 2  # nothing added
    service.start_turn("And now?", first.conversation_id, model="local.gguf",
                       effective_route="local")


def test_an_outbox_item_holding_a_key_fails_without_being_sent(store, keep_key):
    with fault_server() as server:
        cloud_provider("fault", server.url + "/v1")
        service = ChatService(store, Settings())
        turn = service.start_turn(f"Check {OUTBOX_KEY} for me.", model="test-model",
                                  options=TurnOptions(max_tokens=8), effective_route="local")
        item = service.queue_for_later(turn, "fault", None)  # queued before the key was known
        keep_key("fault", OUTBOX_KEY)
        server.script([normal()])
        built: list[str] = []

        def engine_for(name, model):
            built.append(name)
            return OpenAICompatEngine(ProviderConfig(name, "openai", server.url + "/v1",
                                                     "test-model"), "sk-test",
                                      policy=RetryPolicy(initial_backoff=0.01),
                                      timeouts=Timeouts(connect=1, first_token=5, idle=5))

        report = OutboxSender(service.outbox, engine_for).send()
        assert server.chat_requests() == [] and built == []
    failed = service.outbox.get(item.id)
    assert failed.state is OutboxState.FAILED
    assert "contains your API key for fault" in failed.last_error
    assert OUTBOX_KEY not in failed.last_error
    assert [(i.id, why) for i, why in report.failed] == [(item.id, failed.last_error)]


def count_keychain_reads(monkeypatch) -> list[str]:
    """Every read of the OS keychain from now on (the key store's own read, counted: the
    providers it was for)."""
    from app.config.secrets import KeyStore

    reads: list[str] = []
    read = KeyStore._from_keychain

    def counted(self, provider):
        reads.append(provider)
        return read(self, provider)

    monkeypatch.setattr(KeyStore, "_from_keychain", counted)
    return reads


def test_a_turn_reads_the_keychain_once_for_the_check_and_the_mask(store, keep_key,
                                                                   monkeypatch):
    """A cloud turn checks its message against the keys and masks them in its reply: one
    keychain read does both (it used to read once more on the streaming thread). The key is
    still masked in the stored reply."""
    from app.chat.pipeline import TurnEnded, TurnPipeline, TurnTarget
    from tests.support import FixedEngines, ScriptedEngine, reply

    cloud_provider()
    key = "sk-read-once-per-turn-0a1b2c3d4e5f"
    keep_key("acme", key)
    cloud = ScriptedEngine(reply("Your key ", key, " is fine."), reply("Again."))
    pipeline = TurnPipeline(ChatService(store, Settings()), FixedEngines(cloud, cloud))
    reads = count_keychain_reads(monkeypatch)
    target = TurnTarget(provider="acme", route="cloud")
    [ended] = [e for e in pipeline.send("Is my key fine?", target=target)
               if isinstance(e, TurnEnded)]
    assert reads == ["acme"]
    assert ended.outcome.message.content == "Your key [redacted] is fine."
    list(pipeline.send("Again?", ended.outcome.conversation_id, target=target))
    assert reads == ["acme", "acme"]


def test_an_outbox_pass_reads_the_keychain_once(store, monkeypatch):
    """The window passes every 2 s: a pass reads the keys once, for every item it sends
    (the check and the answers' mask), and a pass with nothing to send reads none."""
    with fault_server() as server:
        cloud_provider("fault", server.url + "/v1")
        service = ChatService(store, Settings())
        for question in ("First?", "Second?"):
            turn = service.start_turn(question, model="test-model",
                                      options=TurnOptions(max_tokens=8),
                                      effective_route="local")
            service.queue_for_later(turn, "fault", None)
        server.script([normal(), normal()])

        def engine_for(name, model):
            return OpenAICompatEngine(ProviderConfig(name, "openai", server.url + "/v1",
                                                     "test-model"), "sk-test",
                                      policy=RetryPolicy(initial_backoff=0.01),
                                      timeouts=Timeouts(connect=1, first_token=5, idle=5))

        sender = OutboxSender(service.outbox, engine_for)
        reads = count_keychain_reads(monkeypatch)
        report = sender.send()
        assert len(report.sent) == 2 and len(server.chat_requests()) == 2
        assert reads == ["fault"]
        sender.send()  # nothing left to send
        assert reads == ["fault"]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, text=True,
                          capture_output=True, env=os.environ.copy(), timeout=120)


def test_outpost_ask_refuses_a_pasted_key_with_exit_2(outpost_home):
    """The key is stored by `outpost keys set` (the keychain, else --insecure-file) and read by
    another process: `ask` says whose key it is on stderr, exits 2, stores and sends nothing."""
    secure = keychain().secure
    with fault_server() as server:
        assert cli("providers", "add", "fault", "--base-url", server.url + "/v1", "--model",
                   "test-model").returncode == 0
        stored = cli("keys", "set", "fault", *([] if secure else ["--insecure-file"]),
                     stdin=CLI_KEY + "\n")
        assert stored.returncode == 0, stored.stderr
        try:
            asked = cli("ask", f"Is {CLI_KEY} still valid?", "--provider", "fault",
                        "--route", "cloud", "--json")
            plain = cli("ask", f"Is {CLI_KEY} still valid?", "--provider", "fault")
        finally:
            cli("keys", "delete", "fault")
        assert server.chat_requests() == []
    assert asked.returncode == 2 and plain.returncode == 2
    assert plain.stderr == ("outpost: The message contains your API key for fault; remove the "
                            "key and send the message again (nothing was saved or sent).\n")
    [event] = [json.loads(line) for line in asked.stdout.splitlines()]
    assert event["event"] == "error" and event["kind"] == "key_in_message"
    assert CLI_KEY not in asked.stdout + asked.stderr + plain.stdout + plain.stderr
    assert json.loads(cli("history", "list", "--json").stdout) == []
