"""The `outpost` command in real subprocesses, on the real database file and bundled model."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from app.cli.main import main
from app.cli.parser import build_parser
from app.domain.messages import MessageStatus, Role
from app.storage.store import Store


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin,
                          capture_output=True, text=True, env=os.environ.copy(),
                          timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def db_file(home):
    return home / "data" / "outpost.db"


def open_store(home) -> Store:
    return Store(db_file(home))


def assert_one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("outpost: ")
    return lines[0]


def assert_nothing_stored(home) -> None:
    if not db_file(home).exists():
        return
    store = open_store(home)
    try:
        assert store.list_conversations() == []
        assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    finally:
        store.close()


def test_help_mentions_exit_codes():
    for args in (["--help"], ["ask", "--help"]):
        proc = cli(*args)
        assert proc.returncode == 0
        out = proc.stdout
        assert "exit codes" in out
        for code in ("0", "2", "3", "4", "5", "130"):
            assert f"\n  {code} " in out, code
        assert "OUTPOST_HOME" in out


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command and action's parser, by its prog ("outpost models download")."""
    found = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found.update(_commands(command))
    return found


def test_help_lists_every_models_action():
    """`outpost --help` listed models' actions by hand and missed download, verify and set."""
    parser = build_parser()
    top = " ".join(parser.format_help().split())
    actions = [prog.split()[-1] for prog in _commands(parser) if prog.startswith("outpost models ")]
    assert len(actions) == 8
    assert "models the local model library: " + ", ".join(actions) in top


def test_every_json_flag_is_described():
    """`usage --help` (and 20 more) showed --json with no words."""
    commands = _commands(build_parser())
    for prog, command in commands.items():
        for action in command._actions:
            if "--json" in action.option_strings:
                assert action.help, prog
    assert "cost_usd" in commands["outpost usage"].format_help()


def test_offline_help_says_what_on_off_and_status_do():
    """`offline --help` said nothing of on, off and status, nor that `outpost offline` alone
    means status."""
    offline = " ".join(_commands(build_parser())["outpost offline"].format_help().split())
    for words in ("on: turn Offline mode on", "off: turn it off", "status: say whether it is "
                  "on, and change nothing (the default: `outpost offline` alone)"):
        assert words in offline


def test_unknown_subcommand_is_usage_error():
    proc = cli("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_an_unknown_option_shows_its_commands_usage_and_with_json_the_error_event():
    proc = cli("ask", "hi", "--bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: outpost ask ")
    assert "outpost ask: error: unrecognized arguments: --bogus" in proc.stderr
    nested = cli("history", "search", "lamps", "--frob")
    assert nested.returncode == 2 and nested.stderr.startswith("usage: outpost history search")
    as_json = cli("ask", "hi", "--bogus", "--json")
    assert as_json.returncode == 2
    assert json_lines(as_json.stdout) == [{"event": "error", "kind": "usage",
                                           "message": "unrecognized arguments: --bogus"}]
    missing = cli("ask", "--json")  # no PROMPT: argparse's own error, the same way
    assert missing.returncode == 2 and json_lines(missing.stdout)[0]["kind"] == "usage"
    before = cli("--json", "ask", "hi")  # an option before the command is the top level's
    assert before.returncode == 2 and before.stderr.startswith("usage: outpost [-h]")
    assert "outpost: error: unrecognized arguments: --json" in before.stderr


@pytest.mark.local_model
def test_ask_json_streams_events_and_stores_the_turn(outpost_home):
    proc = cli("ask", "What is the capital of France?", "--json", "--max-tokens", "16",
               "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("delta") >= 1
    assert kinds.count("usage") == 1 and kinds.count("finished") == 1
    assert kinds[-2:] == ["usage", "finished"] and set(kinds[1:-2]) == {"delta"}
    assert kinds[0] == "context"  # added by issue 5: how the prompt fits the window
    usage, finished = events[-2], events[-1]
    assert usage["prompt_tokens"] > 0 and 1 <= usage["completion_tokens"] <= 16
    assert usage["estimated"] is False
    assert finished["reason"] in ("stop", "length")
    assert finished["ttft_ms"] > 0 and finished["tokens_per_s"] > 0
    text = "".join(e["text"] for e in events if e["event"] == "delta")

    store = open_store(outpost_home)
    try:
        [conversation] = store.list_conversations()
        assert conversation.id == finished["conversation_id"]
        assert conversation.title == "What is the capital of France?"
        user, assistant = store.messages(conversation.id)
        assert (user.role, user.content) == (Role.USER, "What is the capital of France?")
        assert assistant.id == finished["message_id"]
        assert assistant.content == text
        assert assistant.status is MessageStatus.COMPLETE
        assert assistant.prompt_tokens == usage["prompt_tokens"]
        assert assistant.completion_tokens == usage["completion_tokens"]
        assert assistant.params["max_tokens"] == 16 and assistant.params["temperature"] == 0.0
        assert assistant.finish_reason == finished["reason"]
    finally:
        store.close()


@pytest.mark.local_model
def test_conversation_flag_continues_and_history_shows_it(outpost_home):
    first = json_lines(cli("ask", "Name a fruit.", "--json", "--max-tokens", "8",
                           "--temperature", "0").stdout)[-1]
    conversation_id = first["conversation_id"]
    proc = cli("ask", "Name another one.", "--conversation", conversation_id, "--json",
               "--max-tokens", "8", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    second = json_lines(proc.stdout)
    assert second[-1]["conversation_id"] == conversation_id

    proc = cli("history", "show", conversation_id, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    # the whole history was sent: the second prompt holds the first turn and more
    assert second[-2]["prompt_tokens"] > rows[1]["prompt_tokens"] + rows[1]["completion_tokens"]
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert [r["content"] for r in rows[::2]] == ["Name a fruit.", "Name another one."]
    for row in rows:
        assert {"id", "role", "content", "status", "engine", "model"} <= set(row)
        assert row["status"] == "complete"
    assert rows[1]["id"] == first["message_id"] and rows[3]["id"] == second[-1]["message_id"]
    assert rows[1]["engine"] == "local"
    assert rows[1]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert rows[0]["engine"] is None
    listed = json.loads(cli("history", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [conversation_id]


def test_history_list_is_newest_first(outpost_home):
    store = open_store(outpost_home)
    ids = []
    for title in ("oldest", "middle", "newest"):
        ids.append(store.create_conversation(title).id)
        time.sleep(0.005)
    store.close()
    proc = cli("history", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [c["id"] for c in listed] == ids[::-1]
    assert [c["title"] for c in listed] == ["newest", "middle", "oldest"]
    for row in listed:
        assert {"id", "title", "updated_at", "created_at"} <= set(row)
    assert [c["updated_at"] for c in listed] == sorted((c["updated_at"] for c in listed),
                                                       reverse=True)
    plain = cli("history", "list")
    assert plain.returncode == 0
    assert [line.split()[0] for line in plain.stdout.splitlines()] == ids[::-1]


def test_history_on_an_empty_home():
    proc = cli("history", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    # in words: stdout stays empty (a script reads no rows), stderr says what to do
    for command, said in ((("history", "list"), "No conversations yet: `outpost ask"),
                          (("providers", "list"), "No providers yet: `outpost providers add")):
        plain = cli(*command)
        assert plain.returncode == 0 and plain.stdout == "", plain.stdout
        assert said in plain.stderr
    waiting = cli("outbox", "list")
    assert "Nothing waits in the outbox. (`outpost outbox list --all` shows" in waiting.stdout


def test_history_show_and_search(outpost_home):
    store = open_store(outpost_home)
    conversation = store.create_conversation("Penguins")
    store.add_message(conversation.id, Role.USER, "Why do penguins huddle?")
    answer = store.add_message(conversation.id, Role.ASSISTANT, "To share warmth.",
                               engine="local", model="x.gguf",
                               status=MessageStatus.INTERRUPTED)
    store.close()

    plain = cli("history", "show", conversation.id)
    assert plain.returncode == 0
    assert "Penguins" in plain.stdout and "Why do penguins huddle?" in plain.stdout
    assert "[interrupted]" in plain.stdout and "assistant · local · x.gguf" in plain.stdout

    hits = cli("history", "search", "warmth")
    assert hits.returncode == 0
    # per hit: the conversation (for `history show`), the message's id and the words around
    head, line = hits.stdout.splitlines()
    assert head == f"conversation {conversation.id}  Penguins"
    assert line.startswith("  assistant ") and line.endswith(": To share warmth.")
    assert f"  assistant {answer.id}, " in line  # (for switch, fork, --reply-to)

    found = cli("history", "search", "warmth", "--json")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert [r["content"] for r in rows] == ["To share warmth."]
    assert rows[0]["conversation_id"] == conversation.id

    # plain words match at the start of a word, all of them; FTS5 syntax is used as written
    assert "To share warmth." in cli("history", "search", "warm").stdout
    assert "To share warmth." in cli("history", "search", "share WARMTH").stdout
    assert "To share warmth." not in cli("history", "search", "share penguins").stdout
    assert "penguins huddle" in cli("history", "search", "warmth OR huddle").stdout
    assert "To share warmth." not in cli("history", "search", '"warm"').stdout  # a phrase

    # syntax FTS5 cannot take: said, and its words searched (it was exit 2, nothing found)
    bad = cli("history", "search", '"warmth')
    assert bad.returncode == 0
    assert "not valid full-text search syntax (a quote is not closed). Searched for its " \
        "words instead." in assert_one_sentence(bad.stderr)
    assert "To share warmth." in bad.stdout


def test_history_search_names_the_search_as_typed_and_refuses_an_empty_one(outpost_home,
                                                                           capsys):
    """`history search 'NEAR('` said "The search 'NEAR()' is not valid …" (the query as it
    was rewritten to run); `history search ""` answered "No message matches ''" with exit 0.
    In process: no model is involved."""
    store = open_store(outpost_home)
    conversation = store.create_conversation("Coast")
    store.add_message(conversation.id, Role.USER, "Which lighthouse is near here?")
    store.close()

    assert main(["history", "search", "NEAR("]) == 0
    said = capsys.readouterr().err.splitlines()[0]
    assert said.startswith("outpost: The search 'NEAR(' is not valid full-text search syntax ")
    assert said.endswith(". Searched for its words instead.")
    assert main(["history", "search", "NEAR(", "--json"]) == 0
    assert [r["content"] for r in json.loads(capsys.readouterr().out)] == [
        "Which lighthouse is near here?"]
    for blank in ("", "   "):
        assert main(["history", "search", blank]) == 2
        out = capsys.readouterr()
        assert out.out == "" and assert_one_sentence(out.err) == \
            "outpost: The search is empty; give a word to look for."


def test_history_search_lists_this_years_messages_before_an_older_import(outpost_home,
                                                                        tmp_path):
    """An older ChatGPT history (2020) imported after this year's messages filled all 50 hits
    of `history search`, none of this year's (found by a trial): newest first is by the
    messages' time, not by when they were stored."""
    from tests.storage.test_search_order import old_history

    store = open_store(outpost_home)
    chat = store.create_conversation("This year")
    new = [store.add_message(chat.id, Role.USER, f"The lighthouse today, {i}.").id
           for i in range(3)]
    store.close()
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(old_history(60)), encoding="utf-8")
    assert cli("import", str(path)).returncode == 0

    found = cli("history", "search", "lighthouse", "--json")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert [r["id"] for r in rows[:3]] == new[::-1] and len(rows) == 50
    assert [r["created_at"][:4] for r in rows[3:]] == ["2020"] * 47
    times = [datetime.fromisoformat(r["created_at"]) for r in rows]
    assert times == sorted(times, reverse=True)
    lines = cli("history", "search", "lighthouse").stdout.splitlines()
    assert lines[0] == f"conversation {chat.id}  This year" and f" {new[2]}, " in lines[1]


def test_history_search_pages_and_says_when_more_match(outpost_home, capsys):
    """`history search lighthous` printed exactly 50 hits (`--json` 50) while the word was in
    886 messages, and said nothing of the rest (a trial). Now: --limit, --offset, and a line
    on stderr when more match (with --json too, whose output stays a list of hits), found by
    asking for one hit more, never by counting them all. In process: no model is involved."""
    store = open_store(outpost_home)
    chat = store.create_conversation("Coast")
    ids = [store.add_message(chat.id, Role.USER, f"The lighthouse, note {i}.").id
           for i in range(53)]
    store.close()
    newest = ids[::-1]

    def search(*args: str) -> tuple[list[str], str]:
        assert main(["history", "search", "lighthouse", *args]) == 0
        out = capsys.readouterr()
        lines = out.out.splitlines()
        assert len(lines) % 2 == 0 and all(line.startswith("conversation ")
                                           for line in lines[::2])
        return [line.split(",")[0].split()[-1] for line in lines[1::2]], out.err

    first, said = search()  # 50 by default, and more said so, with how to get them
    assert first == newest[:50]
    assert said == "outpost: more messages match; add --offset 50 for the next 50.\n"
    rest, said = search("--offset", "50")
    assert rest == newest[50:] and said == ""  # the last page: nothing more to say
    pages = [search("--limit", "20", "--offset", str(start)) for start in (0, 20, 40)]
    assert [hit for page, _ in pages for hit in page] == newest
    assert [err for _, err in pages] == [
        "outpost: more messages match; add --offset 20 for the next 20.\n",
        "outpost: more messages match; add --offset 40 for the next 20.\n", ""]
    none, said = search("--offset", "53")
    assert none == [] and said == "No message matches 'lighthouse' beyond the 53 newest hits.\n"

    assert main(["history", "search", "lighthouse", "--json", "--limit", "5"]) == 0
    out = capsys.readouterr()
    assert [h["id"] for h in json.loads(out.out)] == newest[:5]
    assert out.err == "outpost: more messages match; add --offset 5 for the next 5.\n"
    assert main(["history", "search", "lighthouse", "--json", "--offset", "50"]) == 0
    out = capsys.readouterr()
    assert [h["id"] for h in json.loads(out.out)] == newest[50:] and out.err == ""
    for bad in (["--limit", "0"], ["--offset", "-1"], ["--limit", "many"]):
        assert main(["history", "search", "lighthouse", *bad]) == 2
        assert "a whole number of" in capsys.readouterr().err


def test_history_search_prints_each_hit_on_two_lines(outpost_home, capsys):
    """`history search 'x**2'` printed a snippet with the code's newlines in it, breaking the
    two lines a hit (a trial): a snippet is on one line, as the window shows it."""
    store = open_store(outpost_home)
    chat = store.create_conversation("Squares")
    store.add_message(chat.id, Role.ASSISTANT, "Here:\n\n```python\ndef f(x):\n    return "
                      "x**2\n```\n\nThen   call\tf(3).")
    store.close()
    assert main(["history", "search", "x**2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("conversation ")
    assert lines[1].endswith(": Here: def f(x): return x**2 Then call f(3).")


def test_an_id_can_be_given_by_its_first_characters(outpost_home):
    """As git takes a commit: any unique start of at least 4 hex digits, for a conversation
    (history show, ask --conversation) and a message (history fork); a start shared by two is
    refused, naming what to do; an unknown one is reported as any unknown id."""
    store = open_store(outpost_home)
    penguins = store.create_conversation("Penguins")
    question = store.add_message(penguins.id, Role.USER, "Why do penguins huddle?")
    store.add_message(penguins.id, Role.ASSISTANT, "To share warmth.", engine="local",
                      model="x.gguf")
    twins = [store.create_conversation(f"Twin {n}") for n in (1, 2)]
    store.db.execute("UPDATE conversations SET id = ? WHERE id = ?", ["abcd1" + "0" * 27,
                                                                      twins[0].id])
    store.db.execute("UPDATE conversations SET id = ? WHERE id = ?", ["abcd2" + "0" * 27,
                                                                      twins[1].id])
    store.db.conn.commit()
    store.close()
    short = penguins.id[:8]
    shown = cli("history", "show", short, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [m["content"] for m in json.loads(shown.stdout)][0] == "Why do penguins huddle?"
    forked = cli("history", "fork", question.id[:6])
    assert forked.returncode == 0, forked.stderr
    assert "Penguins (fork)  (1 messages)" in forked.stdout  # the path up to the question
    assert cli("history", "show", "abcd1", "--json").returncode == 0

    both = cli("history", "show", "abcd")
    assert both.returncode == 2
    assert "More than one conversation has an id starting with abcd" in \
        assert_one_sentence(both.stderr)
    unknown = cli("history", "show", "ffff")
    assert unknown.returncode == 2 and "ffff" in unknown.stderr
    asked = cli("ask", "Hi", "--conversation", "abcd", "--json")
    assert asked.returncode == 2 and "More than one conversation" in asked.stderr
    assert cli("history", "show", short.upper(), "--json").returncode == 0
    too_short = cli("history", "show", "abc")  # the start of two, and shorter than 4
    assert too_short.returncode == 2
    assert "'abc' is too short to name a conversation: give at least 4 characters" in \
        assert_one_sentence(too_short.stderr)


def test_a_whole_id_that_starts_another_is_itself(outpost_home):
    """An imported id may be the start of another: given whole, it is that one."""
    store = open_store(outpost_home)
    ids = {}
    for title, new_id in (("Short", "c0ffee01"), ("Longer", "c0ffee0123")):
        made = store.create_conversation(title)
        store.db.execute("UPDATE conversations SET id = ? WHERE id = ?", [new_id, made.id])
        ids[title] = new_id
    store.db.conn.commit()
    store.close()
    for title, given in (("Short", "c0ffee01"), ("Longer", "c0ffee0123"),
                         ("Longer", "c0ffee012")):
        listed = cli("history", "show", given)
        assert listed.returncode == 0, (given, listed.stderr)
        assert f"({ids[title]})" in listed.stdout.splitlines()[0], (given, listed.stdout)


def test_unknown_conversation_id_exits_2_with_one_sentence():
    proc = cli("history", "show", "no-such-id", "--json")
    assert proc.returncode == 2
    line = assert_one_sentence(proc.stderr)
    assert "no-such-id" in line and line.endswith(".")
    assert proc.stdout == ""


@pytest.mark.local_model
def test_ask_with_unknown_conversation_exits_2_and_stores_nothing(outpost_home):
    proc = cli("ask", "hello", "--conversation", "no-such-id", "--max-tokens", "4")
    assert proc.returncode == 2
    assert "no-such-id" in assert_one_sentence(proc.stderr)
    assert_nothing_stored(outpost_home)


@pytest.mark.local_model
def test_out_of_range_temperature_exits_2_and_stores_nothing(outpost_home):
    proc = cli("ask", "hello", "--temperature", "5", "--max-tokens", "4")
    assert proc.returncode == 2
    line = assert_one_sentence(proc.stderr)
    assert "temperature" in line and "between 0 and 2" in line and "5" in line
    assert proc.stdout == ""
    assert_nothing_stored(outpost_home)


@pytest.mark.local_model
def test_empty_prompt_exits_2_and_stores_nothing(outpost_home):
    proc = cli("ask", "   ", "--json")
    assert proc.returncode == 2
    assert "empty" in assert_one_sentence(proc.stderr)
    [event] = json_lines(proc.stdout)
    assert event["event"] == "error" and event["kind"] == "usage"
    assert_nothing_stored(outpost_home)


def test_non_numeric_flag_is_rejected_by_the_parser():
    proc = cli("ask", "hello", "--max-tokens", "lots")
    assert proc.returncode == 2
    assert "--max-tokens" in proc.stderr


@pytest.mark.local_model
def test_plain_ask_streams_text_to_stdout(outpost_home):
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ask", "Say hello to me.",
                             "--max-tokens", "24", "--temperature", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ.copy(), bufsize=0)
    first = proc.stdout.read(1)  # text arrives before the process is done
    rest, err = proc.communicate(timeout=120)
    out = (first + rest).decode("utf-8")
    assert proc.returncode == 0, err
    assert first
    assert out.endswith("\n") and out.strip()
    assert not out.lstrip().startswith("{")  # plain text, not JSON
    store = open_store(outpost_home)
    try:
        [conversation] = store.list_conversations()
        assistant = store.messages(conversation.id)[-1]
        assert out[:-1] == assistant.content
    finally:
        store.close()


@pytest.mark.local_model
def test_prompt_from_stdin(outpost_home):
    proc = cli("ask", "-", "--json", "--max-tokens", "4", stdin="A prompt from a pipe\n")
    assert proc.returncode == 0, proc.stderr
    store = open_store(outpost_home)
    try:
        [conversation] = store.list_conversations()
        assert store.messages(conversation.id)[0].content == "A prompt from a pipe\n"
    finally:
        store.close()


def test_a_reader_that_goes_away_is_not_a_crash(outpost_home):
    """`outpost … | head`: no traceback, exit 141 (like a tool killed by SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "preset", "knobs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader left before reading anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err


def test_a_reader_that_goes_away_before_ask_json_fails_is_not_a_crash(outpost_home):
    """`ask --json … | head -c 600`, the reader gone, and then the turn fails: its error
    event meets the closed pipe inside the error handler (it was a traceback and exit 1)."""
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ask", "Hello", "--provider",
                             "nowhere", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    proc.stdout.close()  # the reader left before the error
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode == 141
    assert b"nowhere" in err  # what went wrong is still said


def test_ask_says_each_failed_cloud_attempt_as_it_fails(outpost_home):
    """Retries are not silence: each failed attempt is a line on stderr as it fails, then the
    reply comes (Cloud only, two 5xx, then an answer)."""
    from tests.fault_server import Normal, fault_server, server_error

    with fault_server() as server:
        server.script([server_error(500), server_error(503), Normal()])
        added = cli("providers", "add", "flaky", "--base-url", server.url + "/v1", "--model",
                    "test-model")
        assert added.returncode == 0, added.stderr
        proc = cli("ask", "Hello", "--provider", "flaky", "--route", "cloud")
    assert proc.returncode == 0, proc.stderr
    told = [line for line in proc.stderr.splitlines() if "attempt" in line]
    assert [line.split(":")[1].strip() for line in told] == ["flaky, attempt 1",
                                                             "flaky, attempt 2"]
    assert proc.stdout.strip()
