"""``outpost backup``: the database's backups, listed, and one put back in place. Works when the
database itself cannot be opened (damaged): it never opens the damaged store (a restore over a
damaged file brings over what that file still holds: ``app.storage.salvage``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.cli.commands.common import emit_list, local_time
from app.config import paths
from app.domain.errors import UsageError
from app.storage.backups import Backups
from app.storage.salvage import restore_and_salvage, salvage, start_over_and_salvage
from app.storage.store import Store


def cmd_backup(args: argparse.Namespace) -> int:
    if args.backup_command == "list":
        backups = Backups(paths.database_path()).all()
        rows = [{"name": b.path.name, "path": str(b.path), "taken": b.taken.isoformat(),
                 "label": b.label, "bytes": os.path.getsize(b.path)} for b in backups]
        if args.json:
            emit_list(rows)
            return 0
        if not rows:
            print("There are no backups yet.")
        width = max((len(row["name"]) for row in rows), default=0)  # the columns line up
        label = max((len(row["label"]) for row in rows), default=0)
        for row in rows:
            print(f"{row['name']:{width}}  {local_time(row['taken'])}  {row['label']:{label}}  "
                  f"{row['bytes'] / 1e6:7.1f} MB")
        return 0
    if args.backup_command == "salvage":
        return _salvage(Path(args.file))
    if args.backup_command == "start-over":
        kept, salvaged = start_over_and_salvage(paths.database_path())
        print(f"Started a new database at {paths.database_path()}; the damaged one is kept as "
              f"{kept}.")
        print(salvaged.describe(kept.name, None))
        return 0
    backup, kept, salvaged = restore_and_salvage(paths.database_path(), args.name)
    print(f"Restored {backup.describe()} as {paths.database_path()}"
          + (f"; the file it replaced is kept as {kept}." if kept else "."))
    if salvaged is not None:
        print(salvaged.describe())
    return 0


def _salvage(copy: Path) -> int:
    """``backup salvage FILE``: what the copy holds that the database lacks or has older."""
    database = paths.database_path()
    if not copy.is_file():
        raise UsageError(f"There is no file {copy}.")
    if database.exists() and copy.resolve() == database.resolve():
        raise UsageError(f"{copy} is the database itself; give a copy of it (`outpost backup "
                         "list` lists them, and a restore keeps the file it replaced).")
    store = Store(database, daily_backup=False)
    try:
        print(salvage(copy, store).describe(copy.name, "the database"))
    finally:
        store.close()
    return 0
