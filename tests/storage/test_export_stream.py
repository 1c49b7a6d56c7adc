"""The export is streamed: the file is written a conversation at a time, each conversation read
from the database only when its piece is handed to the writer, so an export never holds the
whole history in memory; the bytes are those of the whole-document export, and the file is
still written whole or not at all. Real SQLite files; the reads are counted, never timed."""
from __future__ import annotations

import json

import pytest

from app.domain.errors import KnownStorageError
from app.domain.messages import Role
from app.storage.store import Store
from app.storage.transfer import export, outpost_json
from app.storage.transfer.export import export_conversations, export_pieces
from app.storage.transfer.files import write_pieces
from tests.storage.test_transfer import all_ids, build_conversations

CONVERSATIONS = 6


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "history.db")
    build_conversations(store, None)  # two rich ones (branches, candidates, unicode)
    for n in range(CONVERSATIONS - 2):
        conversation = store.create_conversation(f"Plain {n}")
        store.add_message(conversation.id, Role.USER, f"Question {n}")
    yield store
    store.close()


def test_the_json_export_is_exactly_the_whole_documents_json(store):
    """The pieces join into ``json.dumps`` of the whole document (indent 2, sorted keys, not
    ASCII-escaped, a final newline): the bytes the export wrote when it built it whole."""
    ids = all_ids(store)
    for chosen in ([], ids[:1], ids):
        text = export_conversations(store, chosen, "json")
        document = json.loads(text)
        assert [c["id"] for c in document["conversations"]] == chosen
        assert text == json.dumps(document, ensure_ascii=False, sort_keys=True,
                                  indent=2) + "\n"


@pytest.mark.parametrize("fmt", ["json", "md", "html"])
def test_each_conversation_is_read_only_when_the_writer_has_the_ones_before(
        store, tmp_path, monkeypatch, fmt):
    """A log of reads and of pieces given to the writer: conversation k is read only after
    the pieces of conversations 1..k-1 reached the writer, so at most one conversation is
    held at a time; the file appears only once whole."""
    ids = all_ids(store)
    target = tmp_path / f"all.{fmt}"
    log: list[tuple[str, str]] = []
    if fmt == "json":
        read = outpost_json.read_conversation

        def spy(store_, conversation_id):
            log.append(("read", conversation_id))
            assert not target.exists()  # written whole or not at all, still
            return read(store_, conversation_id)

        monkeypatch.setattr(outpost_json, "read_conversation", spy)
    else:
        shown = export._shown

        def spy(store_, conversation_id):  # type: ignore[misc]
            log.append(("read", conversation_id))
            assert not target.exists()
            return shown(store_, conversation_id)

        monkeypatch.setattr(export, "_shown", spy)

    def writer_gets(pieces):
        for piece in pieces:  # (a conversation's piece names its id)
            log.extend(("wrote", c) for c in ids if c in piece and ("wrote", c) not in log)
            yield piece.encode("utf-8")

    size = write_pieces(target, writer_gets(export_pieces(store, ids, fmt)))
    assert log == [step for c in ids for step in (("read", c), ("wrote", c))]
    monkeypatch.undo()
    whole = export_conversations(store, ids, fmt).encode("utf-8")
    assert target.read_bytes() == whole and size == len(whole)


def test_a_read_that_fails_half_way_leaves_the_previous_file_and_no_part(
        store, tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "all.json"
    target.write_text("the previous export\n")
    read, reads = outpost_json.read_conversation, []

    def failing(store_, conversation_id):
        reads.append(conversation_id)
        if len(reads) == 3:
            raise KnownStorageError("The database is locked.")
        return read(store_, conversation_id)

    monkeypatch.setattr(outpost_json, "read_conversation", failing)
    pieces = export_pieces(store, all_ids(store), "json")
    with pytest.raises(KnownStorageError):
        write_pieces(target, (piece.encode() for piece in pieces))
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in target.parent.iterdir()] == ["all.json"]  # no part left
    # the read transaction ended with the failure: the store takes writes
    store.add_message(store.create_conversation("After").id, Role.USER, "still writable")
