"""``outpost export`` and ``outpost import``: conversations to and from files
(``app.storage.transfer`` does the work; this module picks the conversations, the profile and
where the output goes)."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Iterable, Iterator

from app.cli.commands.common import emit, open_core
from app.config.secrets import stored_keys
from app.domain.errors import UsageError
from app.domain.wording import counted
from app.storage.transfer import importer
from app.storage.transfer.export import changed_between, export_pieces, format_for
from app.storage.transfer.files import write_pieces
from app.storage.usage_report import parse_day


def cmd_export(args: argparse.Namespace) -> int:
    days = args.since is not None or args.until is not None
    if args.ids and (args.all or days):
        raise UsageError("Give conversation ids, or --all / --since / --until, not both.")
    if not args.all and not args.ids and not days:
        raise UsageError("Name the conversations to export (ids from `outpost history list`), "
                         "or use --all, --since or --until.")
    first, last = _days(args.since, args.until)
    output = args.output
    fmt = args.format or format_for(None if output == "-" else output)
    core = open_core(args)
    store = core.store
    try:
        if args.all or days:  # the signed-in profile's, as `history list` shows them
            ids = [c.id for c in changed_between(store.list_conversations(core.profile.name),
                                                 first, last)]
        else:
            ids = list(dict.fromkeys(args.ids))  # each once, in the order given
            for conversation_id in ids:
                core.profiles.check_owner(core.profile, store.get_conversation(conversation_id))
        # written as it is read, a conversation at a time: never the whole file in memory
        with contextlib.closing(export_pieces(store, ids, fmt, secrets=stored_keys())) as text:
            size = _write_output(output, _encoded(text))
    finally:
        store.close()
    if output != "-":  # (to stdout, the export itself is all that is written)
        print(f"Exported {counted(len(ids), 'conversation')}{_days_words(first, last)} to "
              f"{output} ({fmt}).")
    if fmt == "json" and size > importer.MAX_IMPORT_BYTES:
        sys.stderr.write(f"outpost: warning: this export is larger than "
                         f"{importer.size_words(importer.MAX_IMPORT_BYTES)}, more than `outpost "
                         "import` reads at once; to move it, export the conversations in "
                         "parts (--since DAY / --until DAY).\n")
    return 0


def _days(since: str | None, until: str | None) -> tuple[dt.date | None, dt.date | None]:
    """``--since`` / ``--until`` as local days (either may be missing)."""
    today = dt.date.today()
    first = parse_day(since, "--since", today) if since is not None else None
    last = parse_day(until, "--until", today) if until is not None else None
    if first is not None and last is not None and last < first:
        raise UsageError(f"--until {last.isoformat()} is before --since {first.isoformat()}.")
    return first, last


def _days_words(first: dt.date | None, last: dt.date | None) -> str:
    if first is None and last is None:
        return ""
    if first is None:
        return f" last changed on {last} or before"
    if last is None:
        return f" last changed on {first} or later"
    return f" last changed on {first}" if first == last else \
        f" last changed from {first} to {last}"


def cmd_import(args: argparse.Namespace) -> int:
    loaded = importer.load(Path(args.file))  # the whole file checked before the store opens
    core = open_core(args)
    try:
        summary = importer.write(core.store, loaded, core.profile.name)
    finally:
        core.store.close()
    if args.json:
        emit(summary.as_dict())
        return 0
    for item in summary.imported:
        left = f", {item['left_out']} left out" if item["left_out"] else ""
        print(f"{item['id']}  {item['title']}  ({counted(item['messages'], 'message')}{left})")
    for item in summary.continued:
        print(f"{item['id']}  {item['title']}  ({counted(item['messages'], 'new message')} "
              f"added{_not_brought_back(item)})")
    for item in summary.skipped:
        print(f"skipped {item['id']}  {item['title']}: {item['reason']}"
              f"{_not_brought_back(item)}")
    messages = sum(item["messages"] for item in summary.imported)
    added = f"; {counted(summary.added_messages, 'new message')} added to " \
        f"{counted(len(summary.continued), 'conversation')}" if summary.continued else ""
    skipped = f"; skipped {len(summary.skipped)}" if summary.skipped else ""
    print(f"Imported {counted(len(summary.imported), 'conversation')} "
          f"({counted(messages, 'message')}) from {Path(args.file).name}{added}{skipped}.")
    if summary.backup:
        print(f"A backup was taken first: `outpost backup restore {Path(summary.backup).name}` "
              "undoes the import.")
    return 0


def _not_brought_back(item: dict) -> str:
    """Messages of the file deleted here (or below one deleted here): not brought back."""
    count = item.get("not_brought_back")
    return f"; {counted(count, 'message')} of the file deleted here, not brought back" \
        if count else ""


def _encoded(pieces: Iterable[str]) -> Iterator[bytes]:
    for piece in pieces:
        yield piece.encode("utf-8")


def _write_output(output: str, pieces: Iterable[bytes]) -> int:
    """stdout for '-' (each piece as it comes); else the file, written whole or not at all.
    Returns the bytes written."""
    if output != "-":
        return write_pieces(Path(output), pieces)
    sys.stdout.flush()
    size = 0
    for piece in pieces:
        sys.stdout.buffer.write(piece)
        size += len(piece)
    sys.stdout.buffer.flush()
    return size
