"""``outpost export`` and ``outpost import`` in real subprocesses, on real database files in two
homes: the JSON round trip is byte-identical, imported text is searchable, profiles are kept
apart, and a hostile file is one sentence on stderr, exit code 2, with nothing stored."""
from __future__ import annotations

import json
import re
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.storage.store import Store
from app.storage.transfer.export import export_conversations
from tests.storage.test_transfer import (build_conversations, chatgpt_export,
                                         newer_chatgpt_export)


def cli(*args: str, home: Path, profile: str | None = None, tz: str | None = None
        ) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUTPOST_HOME=str(home), **({"TZ": tz} if tz else {}))
    env.pop("OUTPOST_PROFILE", None)
    if profile:
        env["OUTPOST_PROFILE"] = profile
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def db_file(home: Path) -> Path:
    return home / "data" / "outpost.db"


def one_sentence(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("outpost: ") and lines[0].endswith(".")
    return lines[0]


def stored_counts(home: Path) -> tuple[int, int]:
    if not db_file(home).exists():
        return 0, 0
    store = Store(db_file(home))
    try:
        return (store.db.execute("select count(*) from conversations").fetchone()[0],
                store.db.execute("select count(*) from messages").fetchone()[0])
    finally:
        store.close()


@pytest.fixture
def home_a(outpost_home) -> tuple[Path, dict[str, str]]:
    """A home whose database has the conversations of ``build_conversations`` (profile NULL:
    the default profile claims them on the first command, as with a database from before
    profiles)."""
    store = Store(db_file(outpost_home))
    ids = build_conversations(store, None)
    store.close()
    return outpost_home, ids


def test_export_import_export_is_byte_identical_across_homes(home_a, tmp_path):
    home, ids = home_a
    first = tmp_path / "first.json"
    proc = cli("export", "--all", "--format", "json", "-o", str(first), home=home)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"Exported 2 conversations to {first} (json).\n"  # (said, not silent)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600  # private, as the database is
    assert cli("export", "--all", home=home).stdout.encode("utf-8") == first.read_bytes()
    data = json.loads(first.read_text(encoding="utf-8"))
    assert [len(c["messages"]) for c in data["conversations"]] == [7, 2]

    home_b = tmp_path / "home-b"
    proc = cli("import", str(first), "--json", home=home_b)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "outpost" and summary["skipped"] == []
    assert [(i["id"], i["messages"]) for i in summary["imported"]] == [
        (ids["lighthouse"], 7), (ids["other"], 2)]
    second = tmp_path / "second.json"  # the format from the name
    assert cli("export", "--all", "-o", str(second), home=home_b).returncode == 0
    assert second.read_bytes() == first.read_bytes()

    # imported text is in the search index, the active path is the original's
    found = json.loads(cli("history", "search", "granite", "--json", home=home_b).stdout)
    assert [(m["id"], m["conversation_id"]) for m in found] == [(ids["retry"],
                                                                 ids["lighthouse"])]
    shown = cli("history", "show", ids["lighthouse"], "--json", home=home_b)
    assert [m["id"] for m in json.loads(shown.stdout)] == [ids["q1"], ids["retry"],
                                                           ids["edited"], ids["best"]]

    # a second import changes nothing and says why
    proc = cli("import", str(first), home=home_b)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "Imported 0 conversations (0 messages) from first.json; skipped 2."
    assert lines[0] == f"skipped {ids['lighthouse']}  Lighthouse <notes> & code: a " \
                       "conversation with this id is already here (imported before?); it was " \
                       "kept as it is"
    assert stored_counts(home_b) == (2, 9)


def test_exports_and_imports_belong_to_the_profile(home_a, tmp_path):
    home, ids = home_a
    assert cli("profile", "add", "bob", home=home).returncode == 0
    store = Store(db_file(home))
    bobs = store.create_conversation("Bob's secret plans", profile="bob")
    store.close()
    mine = json.loads(cli("export", "--all", home=home).stdout)["conversations"]
    assert [c["id"] for c in mine] == [ids["lighthouse"], ids["other"]]
    proc = cli("export", bobs.id, "--format", "md", home=home)
    assert proc.returncode == 2 and proc.stdout == ""
    assert one_sentence(proc) == f"outpost: The conversation {bobs.id} belongs to another " \
                                 "profile."
    theirs = json.loads(cli("export", "--all", home=home, profile="bob").stdout)
    assert [c["id"] for c in theirs["conversations"]] == [bobs.id]

    # an import goes to the profile doing it
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_export()), encoding="utf-8")
    proc = cli("import", str(path), "--json", home=home, profile="bob")
    imported = [i["id"] for i in json.loads(proc.stdout)["imported"]]
    listed = json.loads(cli("history", "list", "--json", home=home, profile="bob").stdout)
    assert set(imported) < {c["id"] for c in listed}
    assert not set(imported) & {c["id"] for c in json.loads(
        cli("history", "list", "--json", home=home).stdout)}
    # the same file for the default profile: its own copy, nothing said of bob's
    proc = cli("import", str(path), home=home)
    assert proc.returncode == 0, proc.stderr
    assert "Imported 2 conversations (9 messages) from conversations.json." in \
        proc.stdout.strip().splitlines()
    assert "bob" not in proc.stdout and "skipped" not in proc.stdout


def test_a_chatgpt_export_is_imported_and_readable(outpost_home, tmp_path):
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_export(), indent=2), encoding="utf-8")
    proc = cli("import", str(path), home=outpost_home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].endswith("  Sourdough starter  (7 messages, 1 left out)")
    assert lines[1].endswith("  ChatGPT conversation  (2 messages)")
    assert lines[2] == "Imported 2 conversations (9 messages) from conversations.json."
    starter = lines[0].split()[0]
    shown = cli("history", "show", starter, home=outpost_home).stdout
    assert re.search(r"assistant · imported · gpt-4o · [0-9a-f]{8}:\n```python\nflour_g = 50",
                     shown)
    assert re.search(r"user  ‹2/2› · [0-9a-f]{8}:\nHow do I feed a \*\*rye\*\* sourdough "
                     r"starter\?", shown)
    assert "[interrupted]" in shown
    found = json.loads(cli("history", "search", "bubbly", "--json", home=outpost_home).stdout)
    assert [m["conversation_id"] for m in found] == [starter]
    page = tmp_path / "starter.html"
    assert cli("export", starter, "-o", str(page), home=outpost_home).returncode == 0
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "prefers-color-scheme: dark" in html
    assert "User · version 2 of 2" in html and "Assistant · imported · gpt-4o" in html
    notes = tmp_path / "starter.md"
    assert cli("export", starter, "-o", str(notes), home=outpost_home).returncode == 0
    assert notes.read_text(encoding="utf-8").startswith("# Sourdough starter\n")


def test_a_newer_chatgpt_export_adds_what_was_said_since(outpost_home, tmp_path):
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_export()), encoding="utf-8")
    assert cli("import", str(path), home=outpost_home).returncode == 0
    path.write_text(json.dumps(newer_chatgpt_export()), encoding="utf-8")
    proc = cli("import", str(path), home=outpost_home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].endswith("  Third  (3 messages)")
    assert lines[1].endswith("  Sourdough starter  (2 new messages added)")
    assert lines[2].endswith("  ChatGPT conversation  (1 new message added)")
    assert lines[3] == "Imported 1 conversation (3 messages) from conversations.json; 3 new " \
                       "messages added to 2 conversations."
    assert stored_counts(outpost_home) == (3, 15)
    found = json.loads(cli("history", "search", "domed", "--json", home=outpost_home).stdout)
    assert [m["content"] for m in found] == ["Bubbly and domed: ready to bake."]
    summary = json.loads(cli("import", str(path), "--json", home=outpost_home).stdout)
    assert (summary["imported"], summary["continued"], len(summary["skipped"])) == ([], [], 3)


def _valid_then_orphan(tmp_path: Path) -> bytes:
    """Two conversations, the second with a reply whose question is not in the file."""
    store = Store(tmp_path / "scratch.db")
    try:
        ids = build_conversations(store, None)
        data = json.loads(export_conversations(store, [ids["lighthouse"], ids["other"]],
                                               "json"))
    finally:
        store.close()
    data["conversations"][1]["messages"][1]["parent_id"] = "no-such-question"
    return json.dumps(data).encode("utf-8")


HOSTILE = {
    "not JSON": (lambda tmp: b"<html>not an export</html>", "it is not valid JSON"),
    "deep nesting": (lambda tmp: b"[" * 100_000 + b"]" * 100_000, "more than 64 deep"),
    "an unknown format": (lambda tmp: b'{"chats": [1, 2]}', "neither an Outpost export"),
    "a missing parent after a good conversation": (
        _valid_then_orphan, "conversation 2 ('Packing list'): message"),
    "a ChatGPT cycle": (
        lambda tmp: json.dumps([dict(chatgpt_export()[1], mapping={
            "x": {"id": "x", "parent": "y", "children": ["y"], "message": None},
            "y": {"id": "y", "parent": "x", "children": ["x"], "message": None}})]).encode(),
        "its nodes form a cycle"),
    "wrong types": (lambda tmp: b'{"format": "outpost-conversations", "version": 1, '
                                b'"conversations": [{"id": 7}]}',
                    "conversation 1: id must be text, got 7"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_file_is_one_sentence_and_nothing_is_stored(outpost_home, tmp_path, case):
    make, expected = HOSTILE[case]
    path = tmp_path / "upload.json"
    path.write_bytes(make(tmp_path))
    proc = cli("import", str(path), "--json", home=outpost_home)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_sentence(proc)
    assert line.startswith("outpost: upload.json cannot be imported: ") and expected in line
    assert stored_counts(outpost_home) == (0, 0)


def test_a_file_over_2_gb_is_refused_before_it_is_parsed(outpost_home, tmp_path):
    path = tmp_path / "big.json"
    with path.open("wb") as out:  # sparse: only its size is written
        out.truncate(2 * 1024 ** 3 + 1)
    proc = cli("import", str(path), home=outpost_home)
    assert proc.returncode == 2
    assert one_sentence(proc) == "outpost: big.json is larger than 2 GB, the most Outpost " \
                                 "imports at once; nothing was imported."
    assert stored_counts(outpost_home) == (0, 0)


def test_export_usage_is_checked(home_a, tmp_path):
    home, ids = home_a
    cases = [
        ((), "outpost: Name the conversations to export (ids from `outpost history list`), "
             "or use --all, --since or --until."),
        ((ids["other"], "--all"), "outpost: Give conversation ids, or --all / --since / "
                                  "--until, not both."),
        ((ids["other"], "--since", "7d"), "outpost: Give conversation ids, or --all / --since "
                                          "/ --until, not both."),
        (("--since", "2026-03-05", "--until", "2026-03-01"),
         "outpost: --until 2026-03-01 is before --since 2026-03-05."),
        (("--until", "March"), "outpost: --until 'March' is not a day: give YYYY-MM-DD "
                               "(2026-11-30), today, yesterday, or Nd for N days ago (7d)."),
        (("0" * 32,), f"outpost: There is no conversation with id {'0' * 32!r}."),
        ((ids["other"], "-o", str(tmp_path / "no" / "such" / "dir.md")), None),
    ]
    for args, expected in cases:
        proc = cli("export", *args, home=home)
        assert proc.returncode == 2 and proc.stdout == "", args
        line = one_sentence(proc)
        assert line == expected if expected else "could not be written" in line
    assert not (tmp_path / "no").exists()


def test_a_big_history_is_exported_in_parts_by_local_day(home_a, tmp_path):
    """``--since`` / ``--until``: the conversations last changed on those local days (both
    included), so a history too big for one file can be moved in parts; ``--all`` and ids
    still work. In Tokyo (UTC+9) 2026-03-01T20:00Z is already March 2nd."""
    home, ids = home_a
    store = Store(db_file(home))
    try:
        store.db.execute("update conversations set updated_at = ? where id = ?",
                         ["2026-03-01T20:00:00.000+00:00", ids["lighthouse"]])
        store.db.execute("update conversations set updated_at = ? where id = ?",
                         ["2026-02-28T14:59:59.000+00:00", ids["other"]])  # 23:59:59 there
        store.db.conn.commit()
    finally:
        store.close()

    def exported(*flags: str) -> list[str]:
        proc = cli("export", *flags, home=home, tz="Asia/Tokyo")
        assert proc.returncode == 0, proc.stderr
        return [c["id"] for c in json.loads(proc.stdout)["conversations"]]

    assert exported("--since", "2026-03-02") == [ids["lighthouse"]]
    assert exported("--until", "2026-03-01") == [ids["other"]]
    assert exported("--since", "2026-02-28", "--until", "2026-02-28") == [ids["other"]]
    assert exported("--since", "2026-03-01", "--until", "2026-03-01") == []
    assert exported("--since", "2026-02-01", "--until", "2026-03-31") == \
        [ids["lighthouse"], ids["other"]]
    assert exported("--all", "--since", "2026-03-02") == [ids["lighthouse"]]
    assert exported("--all") == [ids["lighthouse"], ids["other"]]
    assert exported(ids["other"]) == [ids["other"]]
    part = tmp_path / "march.json"
    proc = cli("export", "--since", "2026-03-01", "--until", "2026-03-31", "-o", str(part),
               home=home, tz="Asia/Tokyo")
    assert proc.stdout == f"Exported 1 conversation last changed from 2026-03-01 to " \
                          f"2026-03-31 to {part} (json).\n"
    assert cli("import", str(part), home=tmp_path / "home-b").returncode == 0
    assert stored_counts(tmp_path / "home-b") == (1, 7)


def test_help_lists_the_exit_codes():
    for command in ("export", "import"):
        out = subprocess.run([sys.executable, "-m", "app.cli", command, "--help"],
                             capture_output=True, text=True, timeout=60).stdout
        assert "exit codes" in out and "\n  2 " in out


def test_a_markdown_export_is_said_to_be_for_reading_not_importing(home_a, tmp_path):
    home, _ = home_a
    notes = tmp_path / "notes.md"
    assert cli("export", "--all", "-o", str(notes), home=home).returncode == 0
    proc = cli("import", str(notes), home=home)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "a Markdown or HTML export is for reading; only a JSON export" in proc.stderr

