"""``outpost backup``: the database's backups, listed, and one put back in place. Works when the
database itself cannot be opened (damaged): it never opens the damaged store (a restore over a
damaged file brings over what that file still holds: ``app.storage.salvage``)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.cli.commands.common import emit_list, local_time, require_admin
from app.config import paths
from app.domain.errors import UsageError
from app.domain.wording import counted
from app.storage.backups import Backups, quick_check_file
from app.storage.restore import choose_backup, written_since
from app.storage.salvage import (
    refuse_non_sqlite,
    restore_and_salvage,
    salvage,
    start_over_and_salvage,
)
from app.storage.store import Store


def cmd_backup(args: argparse.Namespace) -> int:
    if args.backup_command == "list":
        return _list(Backups(paths.database_path()), args.json)
    if args.backup_command in ("restore", "salvage"):
        # every profile's data rolls back or comes back (removed profiles, old PINs)
        require_admin(args, f"{_DOING[args.backup_command]} (it changes every profile's data)",
                      unless_damaged=True)
    if args.backup_command == "salvage":
        return _salvage(Path(args.file))
    if args.backup_command == "start-over":
        kept, salvaged = start_over_and_salvage(paths.database_path())
        print(f"Started a new database at {paths.database_path()}; the damaged one is kept as "
              f"{kept}.")
        print(salvaged.describe(kept.name, None))
        return 0
    rollback = _rollback(args)
    if rollback is False:
        return 0  # the user said no
    backup, kept, salvaged = restore_and_salvage(paths.database_path(), args.name)
    print(f"Restored {backup.describe()} as {paths.database_path()}"
          + (f"; the file it replaced is kept as {kept}." if kept else "."))
    if salvaged is not None:
        print(salvaged.describe())
    if rollback and kept:
        print(f"`outpost backup salvage {kept}` brings back what was written since the backup.")
    return 0


def _rollback(args: argparse.Namespace) -> bool | None:
    """Before ``backup restore``: over a healthy database (a rollback) say what it sets aside
    and ask, as ``history delete`` does: on a terminal unless --yes, refused without either.
    True: a rollback, go ahead; False: the user said no; None: no database, or a damaged one
    (the app cannot open it: restoring is what it asks for, as the window's dialog offers,
    and what that file still holds is brought over), so nothing is asked."""
    database = paths.database_path()
    if not database.exists() or quick_check_file(database) is not None:
        return None
    backup = choose_backup(database, args.name)  # (its refusals, before any question)
    if args.yes:
        return True
    since = written_since(database, backup)
    what = "what was written since it was taken is" if since is None else \
        f"the {_listed(since)} written since it was taken are"
    told = (f"Restoring {backup.describe()}, rolls the database back: {what} set aside with "
            f"the file it replaces, kept in {Backups(database).where} (`outpost backup salvage "
            "FILE` brings them back).")
    if not sys.stdin.isatty():
        raise UsageError(f"{told} There is no terminal to ask at; add --yes to restore without "
                         "the question. Nothing was changed.")
    try:
        answer = input(f"{told}\nRestore it? [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer in ("y", "yes"):
        return True
    print("Nothing was changed.", file=sys.stderr)
    return False


def _listed(since: dict[str, int]) -> str:
    """"2 conversations, 5 messages and 0 profiles"."""
    parts = [counted(since[table], noun) for table, noun in
             (("conversations", "conversation"), ("messages", "message"),
              ("profiles", "profile"))]
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


_DOING = {"restore": "restore a backup", "salvage": "bring back what a copy holds"}


def _list(backups: Backups, as_json: bool) -> int:
    """``backup list``: every backup, newest first, each good or damaged (``Backups.problem``:
    its header each time, its quick_check when the file changed since it was last checked),
    and the log kept beside a set-aside copy."""
    rows = []
    for b in backups.all():
        problem = backups.problem(b)
        log = backups.log_of(b)
        rows.append({"name": b.path.name, "path": str(b.path), "taken": b.taken.isoformat(),
                     "label": b.label, "bytes": os.path.getsize(b.path),
                     "state": "good" if problem is None else "damaged", "problem": problem,
                     "log": str(log) if log else None})
    if as_json:
        emit_list(rows)
        return 0
    if not rows:
        print("There are no backups yet.")
    width = max((len(row["name"]) for row in rows), default=0)  # the columns line up
    label = max((len(row["label"]) for row in rows), default=0)
    for row in rows:
        state = "good" if row["problem"] is None else f"damaged: {row['problem']}"
        log = " (with its write-ahead log)" if row["log"] else ""
        print(f"{row['name']:{width}}  {local_time(row['taken'])}  {row['label']:{label}}  "
              f"{row['bytes'] / 1e6:7.1f} MB  {state}{log}")
    return 0


def _salvage(copy: Path) -> int:
    """``backup salvage FILE``: what the copy holds that the database lacks or has older."""
    database = paths.database_path()
    if not copy.is_file():
        raise UsageError(f"There is no file {copy}.")
    if database.exists() and copy.resolve() == database.resolve():
        raise UsageError(f"{copy} is the database itself; give a copy of it (`outpost backup "
                         "list` lists them, and a restore keeps the file it replaced).")
    refuse_non_sqlite(copy)  # (a JSON export, an empty file: before the database is opened)
    store = Store(database, daily_backup=False)
    try:
        salvaged = salvage(copy, store, named=True)  # refuses a database not Outpost's
        print(salvaged.describe(copy.name, "the database"))
    finally:
        store.close()
    return 0
