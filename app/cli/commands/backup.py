"""``outpost backup``: the database's backups, listed, and one put back in place. Works when the
database itself cannot be opened (damaged): it never opens the damaged store (a restore over a
damaged file brings over what that file still holds: ``app.storage.salvage``)."""
from __future__ import annotations

import argparse
import os

from app.cli.commands.common import emit_list, local_time
from app.config import paths
from app.storage.backups import Backups
from app.storage.salvage import restore_and_salvage


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
        for row in rows:
            print(f"{row['name']}  {local_time(row['taken'])}  {row['label']}  "
                  f"{row['bytes'] / 1e6:.1f} MB")
        return 0
    backup, kept, salvaged = restore_and_salvage(paths.database_path(), args.name)
    print(f"Restored {backup.describe()} as {paths.database_path()}"
          + (f"; the file it replaced is kept as {kept}." if kept else "."))
    if salvaged is not None:
        print(salvaged.describe())
    return 0
