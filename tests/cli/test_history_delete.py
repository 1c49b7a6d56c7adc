"""``outpost history delete``: the CLI told users to "delete that message" (a key found in the
history) but could delete nothing (a privacy trial). A conversation, or a message with
everything below it, goes as in the window: its words leave the database file, and with
--from-backups the backups' copies too; asked first on a terminal, refused while a reply in it
is being written, and the question speaks of the backups only when one holds it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app import cli
from app.domain.messages import MessageStatus, Role
from app.storage.store import Store
from app.storage.writers import this_writer, writing
from tests.support import files_holding

pytestmark = pytest.mark.usefixtures("outpost_home")


def _database(home: Path) -> Path:
    return home / "data" / "outpost.db"


def _chat(title: str, word: str, profile: str | None = None) -> tuple[str, list[str]]:
    """A conversation: a question, its answer, a follow-up and its answer, each holding
    ``word``; its id and its messages' ids, oldest first."""
    store = Store(daily_backup=False)
    try:
        chat = store.create_conversation(title, profile=profile)
        ids = [store.add_message(chat.id, role, f"{word} {n} " + "more words " * 30).id
               for n, role in enumerate((Role.USER, Role.ASSISTANT) * 2)]
        return chat.id, ids
    finally:
        store.close()


def _messages(conversation_id: str) -> list[str]:
    store = Store(daily_backup=False)
    try:
        return [m.id for m in store.messages(conversation_id)]
    finally:
        store.close()


def _a_terminal(monkeypatch, *answers: str) -> list[str]:
    """stdin is a terminal that answers the questions in turn; the questions asked."""
    asked: list[str] = []
    replies = iter(answers)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)

    def answer(question: str) -> str:
        asked.append(question)
        return next(replies)

    monkeypatch.setattr("builtins.input", answer)
    return asked


def test_a_conversation_is_deleted_by_its_ids_start_and_its_words_leave_the_file(
        outpost_home, capsys):
    kept, _ = _chat("Kept", "lighthouse")
    Store().close()  # the day's backup (one a day: the command's start takes none)
    doomed, _ = _chat("Doomed", "zanzibarquokka")

    assert cli.main(["history", "delete", doomed[:8], "--yes"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"Deleted the conversation {doomed} and its 4 messages." in out
    assert "backups" not in out  # none was taken since it was made: none holds it
    assert files_holding(_database(outpost_home), "zanzibarquokka") == []
    assert _messages(doomed) == [] and len(_messages(kept)) == 4


def test_without_a_terminal_it_needs_yes_and_deletes_nothing(capsys, monkeypatch):
    doomed, _ = _chat("Doomed", "zanzibarquokka")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    assert cli.main(["history", "delete", doomed]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert len(_messages(doomed)) == 4


def test_on_a_terminal_it_asks_and_no_keeps_everything(capsys, monkeypatch):
    doomed, _ = _chat("Doomed", "zanzibarquokka")
    asked = _a_terminal(monkeypatch, "n")

    assert cli.main(["history", "delete", doomed]) == 0
    [question] = asked  # (the day's backup, taken by this command's start, holds it)
    assert question.startswith("Delete \u201cDoomed\u201d and all its messages (4 messages)? "
                               "This cannot be undone.\nOutpost's backups still hold it")
    assert question.endswith(" [y/N] ")
    assert "Nothing was deleted." in capsys.readouterr().err
    assert len(_messages(doomed)) == 4


def test_a_message_goes_with_everything_below_it(outpost_home, capsys):
    chat, (question, answer, follow_up, last) = _chat("Chat", "zanzibarquokka")

    assert cli.main(["history", "delete", "--message", follow_up[:8], "--yes"]) == 0
    assert f"Deleted 2 messages from the conversation {chat}." in capsys.readouterr().out
    assert _messages(chat) == [question, answer]
    assert files_holding(_database(outpost_home), "zanzibarquokka 2") == []


def test_a_conversation_whose_reply_is_being_written_is_not_deleted(capsys):
    chat, _ = _chat("Chat", "zanzibarquokka")
    store = Store(daily_backup=False)
    reply = store.add_message(chat, Role.ASSISTANT, "half an ans",
                              status=MessageStatus.STREAMING)
    store.update_message(reply.id, writer=this_writer())
    store.close()

    with writing(reply.id):  # a turn of this process writes it
        assert cli.main(["history", "delete", chat, "--yes"]) == 2
        assert "still being written" in capsys.readouterr().err
        assert cli.main(["history", "delete", "--message", reply.id, "--yes"]) == 2
        assert "still being written" in capsys.readouterr().err
    assert len(_messages(chat)) == 5


def test_another_profiles_conversation_is_not_deleted(capsys):
    assert cli.main(["profile", "add", "carl"]) == 0
    theirs, _ = _chat("Carl's", "zanzibarquokka", profile="carl")

    assert cli.main(["history", "delete", theirs, "--yes"]) == 2
    assert "belongs to another profile" in capsys.readouterr().err
    assert len(_messages(theirs)) == 4


def test_the_backups_are_named_only_when_one_holds_it_and_emptied_when_asked(
        outpost_home, capsys, monkeypatch):
    held, _ = _chat("In the backup", "zanzibarquokka")
    Store().close()  # the day's backup holds it
    [backup] = (outpost_home / "data" / "backups").glob("*-daily.db")
    asked = _a_terminal(monkeypatch, "y", "")  # yes; and from the backups too (the default)

    assert cli.main(["history", "delete", held]) == 0, capsys.readouterr().err
    assert "Outpost's backups still hold it" in asked[0]
    assert asked[1] == "Delete it from the backups too? [Y/n] "
    assert "Deleted it from 1 backup." in capsys.readouterr().out
    assert "zanzibarquokka".encode() not in backup.read_bytes()

    newer, _ = _chat("After the backup", "marmoset")
    again, _ = _chat("Also held", "marmoset")
    Store(daily_backup=False).backup("before-m999_x")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    newest, _ = _chat("Made after every backup", "pangolin")
    assert cli.main(["history", "delete", newest, "--yes"]) == 0
    assert "backups" not in capsys.readouterr().out
    assert cli.main(["history", "delete", again, "--yes"]) == 0
    assert "Outpost's backups still hold it" in capsys.readouterr().out
    assert newer  # (kept)
