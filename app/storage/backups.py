"""Backups of the database file, all in one folder beside it (``backups/``, 0700).

* **Rolling**: the first start of each day (local time) copies the database when it holds a
  conversation; the newest ``KEEP_DAILY`` of these are kept.
* **Before a migration**: the file as the older version left it.
* **Before an import** that adds conversations (``outpost import``, the window's Import): the
  newest ``KEEP_BEFORE_IMPORT`` are kept, so an import can be undone with a restore.
* **Set aside**: the database with a leftover write-ahead log no running Outpost owns
  (``-wal``, ``-shm`` beside it, copied as they were), and the file a restore replaced.

Every file is its owner's only (0600 from its first byte), written under a temporary ``.part``
name and renamed once whole, so a kill never leaves a half backup that looks whole. A copy
made with SQLite's backup API is checked (``PRAGMA quick_check`` on the copy) before the
rename: a backup with a final name was good when it was written. Names are
``<stem>-<UTC stamp>-<label>.db``; the stamp sorts them by time.

Whether a backup is good *now* (``Backups.problem``, for ``outpost backup list``): its header
is read each time (a file cut short, or not a database); ``quick_check`` reads every page, so
its answer is kept in ``checks.json`` beside the backups with the file's size, mtime and inode,
and asked again only when one of them changed (a backup's own check, when written, is kept
there too). A restore always checks the backup it puts back. A log with no frames left beside a
backup (a restore's) is removed (``tidy``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from app.config import paths

KEEP_DAILY = 7
DAILY = "daily"
BEFORE_IMPORT = "before-import"  # taken before an import adds conversations
KEEP_BEFORE_IMPORT = 3
DAMAGED_LABELS = ("damaged",)  # never offered for a restore
_STAMP = "%Y%m%dT%H%M%S%fZ"
_NAME = re.compile(r"^(?P<stem>.+)-(?P<stamp>\d{8}T\d{12}Z)-(?P<label>[A-Za-z0-9_.-]+)\.db$")
CHECKS = "checks.json"  # the backups' last quick_check, by file name (see the docstring)
SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_HEADER = 32  # a log this long or shorter holds no frames
# a copy's check opens it as the database is opened (WAL): its -shm (32 KiB) and a log beside it
COPY_OVERHEAD = 64 * 1024


class CopyDamaged(Exception):
    """A backup copy failed its check: the database it was copied from is damaged (SQLite's
    backup API copies pages as they are). Carries the check's first complaint."""


@dataclass(frozen=True)
class Backup:
    path: Path
    taken: dt.datetime  # UTC
    label: str

    def describe(self) -> str:
        """``outpost-….db, taken 2026-11-30 18:02``: the file name and its local time."""
        return f"{self.path.name}, taken {self.taken.astimezone():%Y-%m-%d %H:%M}"


def folder_for(db_path: Path) -> Path:
    """Where the backups of ``db_path`` go (not created here): the data dir's ``backups/`` for
    Outpost's own database, else ``backups/`` beside the file (tests, a copy opened by hand)."""
    if db_path == paths.database_path():
        return paths.data_dir() / "backups"
    return db_path.parent / "backups"


def quick_check_file(path: Path) -> str | None:
    """None when the file at ``path`` passes ``PRAGMA quick_check``, else the first complaint.
    The file is opened read-only and immutable: nothing beside it is read or created. An
    empty file passes SQLite's check but holds nothing: it is never a good backup."""
    try:
        if path.stat().st_size == 0:
            return "it is empty (0 bytes)"
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        return first_complaint([r[0] for r in conn.execute("PRAGMA quick_check")])
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


def header_problem(path: Path) -> str | None:
    """What the first 100 bytes of ``path`` say is wrong with it (None: nothing): not an SQLite
    file, or shorter than the pages its header counts (cut short). Cheap: no page is read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        return exc.strerror or str(exc)
    if size == 0:
        return "it is empty (0 bytes)"
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return "it is not an SQLite database (its header is wrong)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return "its header is damaged (no valid page size)"
    pages = int.from_bytes(head[28:32], "big")
    counted_valid = head[24:28] == head[92:96]  # the page count is kept up to date
    if size % page_size or (counted_valid and pages * page_size > size):
        return f"it is cut short ({size:,} bytes)"
    return None


def first_complaint(lines: list[str]) -> str | None:
    """``PRAGMA quick_check``'s result as None (``ok``) or its first line worth reading."""
    if lines == ["ok"]:
        return None
    useful = [line for line in lines if line and not line.startswith("***")] or lines or \
        ["no result"]
    text = " ".join(useful[0].split())
    return text if len(text) <= 100 else text[:99] + "…"


class Backups:
    """The backups of one database file."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self.where = folder_for(db_path)

    @property
    def folder(self) -> Path:
        """The folder, made (0700) when missing: on first use only, a new install has none."""
        return paths.own_folder(self.where)

    def all(self) -> list[Backup]:
        """Every finished backup of this database, newest first (``.part`` files are not)."""
        if not self.where.is_dir():
            return []
        found = []
        for path in self.where.iterdir():
            match = _NAME.match(path.name)
            if match is None or match["stem"] != self.db_path.stem:
                continue
            taken = dt.datetime.strptime(match["stamp"], _STAMP).replace(
                tzinfo=dt.timezone.utc)
            found.append(Backup(path, taken, match["label"]))
        return sorted(found, key=lambda b: b.taken, reverse=True)

    def newest_good(self) -> Backup | None:
        """The newest backup that passes its check now (damaged copies are never offered)."""
        for backup in self.all():
            if backup.label not in DAMAGED_LABELS and quick_check_file(backup.path) is None:
                return backup
        return None

    def problem(self, backup: Backup) -> str | None:
        """Why ``backup`` is not good (None: it is): one set aside as damaged, its header,
        then its ``quick_check`` (kept in ``CHECKS`` until the file changes)."""
        if backup.label in DAMAGED_LABELS:
            return "kept as the damaged file it replaced"
        problem = header_problem(backup.path)
        if problem is not None:
            return problem
        stamp = _stamp(backup.path)
        known = self._checks().get(backup.path.name)
        if known is not None and stamp is not None and known[:3] == stamp:
            return known[3]
        problem = quick_check_file(backup.path)
        self.remember_check(backup.path, problem)
        return problem

    def remember_check(self, path: Path, problem: str | None) -> None:
        """Keep a check's answer for ``path`` (with its size, mtime and inode). Best effort:
        an answer not kept only costs another check."""
        stamp = _stamp(path)
        if stamp is None:
            return
        checks = self._checks()
        checks[path.name] = [*stamp, problem]
        names = {b.path.name for b in self.all()}
        checks = {name: value for name, value in checks.items() if name in names}
        target = self.where / CHECKS
        partial = target.with_name(f"{CHECKS}.{os.getpid()}.part")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(checks, out)
            os.replace(partial, target)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()

    def _checks(self) -> dict[str, list]:
        try:
            data = json.loads((self.where / CHECKS).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 4} \
            if isinstance(data, dict) else {}

    def log_of(self, backup: Backup) -> Path | None:
        """The write-ahead log kept beside ``backup`` (a set-aside copy's), when it holds
        frames."""
        wal = backup.path.with_name(backup.path.name + "-wal")
        stamp = _stamp(wal)
        return wal if stamp is not None and stamp[0] > _WAL_HEADER else None

    def tidy(self) -> list[Path]:
        """Remove the ``-wal`` / ``-shm`` beside backups that no backup needs: a log with no
        frames (a restore's, copied as it was) and its index, an index without a log, and
        both where their backup is gone. Returns what was removed."""
        if not self.where.is_dir():
            return []
        removed = []
        for path in self.where.iterdir():
            base, suffix = path.name[:-4], path.name[-4:]
            if suffix not in ("-wal", "-shm") or not _NAME.match(base):
                continue
            db = path.with_name(base)
            wal = db.with_name(base + "-wal")
            stamp = _stamp(wal)
            if not db.exists() or stamp is None or stamp[0] <= _WAL_HEADER:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed

    def find(self, name: str) -> Backup | None:
        """A backup by its file name (or path)."""
        wanted = Path(name).name
        return next((b for b in self.all() if b.path.name == wanted), None)

    # -- writing -----------------------------------------------------------------------------
    def _target(self, label: str) -> Path:
        stamp = dt.datetime.now(dt.timezone.utc).strftime(_STAMP)
        return self.folder / f"{self.db_path.stem}-{stamp}-{label}.db"

    def write(self, source: sqlite3.Connection, label: str) -> Path:
        """A checked copy of the database ``source`` is connected to (SQLite's backup API: a
        consistent snapshot, other connections may keep writing). Raises CopyDamaged (and
        leaves nothing behind) when the copy fails its check."""
        dest = self._target(label)
        partial = dest.with_name(dest.name + ".part")
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        try:
            out = sqlite3.connect(str(partial))
            try:
                source.backup(out)
                problem = first_complaint([r[0] for r in out.execute("PRAGMA quick_check")])
            except sqlite3.DatabaseError as exc:
                if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF not in (11, 26):
                    # not SQLITE_CORRUPT / SQLITE_NOTADB: a problem with the copy, not the data
                    raise
                problem = str(exc)
            finally:
                out.close()
            if problem is not None:
                raise CopyDamaged(problem)
            os.chmod(partial, 0o600)
            fsync_file(partial)
            os.replace(partial, dest)
        finally:
            # the copy is opened as the database is (WAL): a check the disk cut short leaves
            # its -wal and -shm beside it, on a disk that is already full
            for leftover in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    partial.with_name(partial.name + leftover).unlink(missing_ok=True)
        self.remember_check(dest, None)  # it passed its check just now
        return dest

    def room_for_copy(self, source: sqlite3.Connection) -> tuple[int, int]:
        """(bytes free on the disk the backups go to, about how many a copy of the database
        ``source`` is connected to needs there): every page (SQLite's backup API copies free
        pages too) and ``COPY_OVERHEAD`` for what its check makes beside it."""
        page_count = source.execute("PRAGMA page_count").fetchone()[0]
        page_size = source.execute("PRAGMA page_size").fetchone()[0]
        where = self.where
        while not where.exists() and where != where.parent:
            where = where.parent  # (a new install: the folder is made by the first backup)
        return shutil.disk_usage(where).free, page_count * page_size + COPY_OVERHEAD

    def daily_due(self, today: dt.date | None = None) -> bool:
        """No rolling backup has been taken today (local time)."""
        today = today or dt.datetime.now().astimezone().date()
        return not any(b.label == DAILY and b.taken.astimezone().date() == today
                       for b in self.all())

    def prune_daily(self, keep: int = KEEP_DAILY, label: str = DAILY) -> list[Path]:
        """Delete the rolling backups (of ``label``) beyond the newest ``keep``; the others are
        left alone."""
        old = [b.path for b in self.all() if b.label == label][keep:]
        for path in old:
            path.unlink(missing_ok=True)
        self.tidy()
        return old

    def set_aside(self, label: str) -> Path:
        """Verbatim copies of the database and its ``-wal`` / ``-shm`` (those that exist), for
        a state that must not be lost before Outpost touches it. Returns the database's copy;
        the others sit beside it with the same name and their suffix."""
        dest = self._target(label)
        wal = _stamp(self.db_path.with_name(self.db_path.name + "-wal"))
        for suffix in ("", "-wal", "-shm"):
            source = self.db_path.with_name(self.db_path.name + suffix)
            if suffix and (not source.exists() or wal is None or wal[0] <= _WAL_HEADER):
                continue  # a log with no frames (and its index) holds nothing to keep
            copy_private(source, dest.with_name(dest.name + suffix))
        return dest


def copy_private(source: Path, dest: Path) -> None:
    """``source`` copied to ``dest`` whole or not at all, readable by its owner only."""
    partial = dest.with_name(dest.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, dest)
    finally:
        if partial.exists():
            partial.unlink()


def _stamp(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def fsync_file(path: Path) -> None:
    """Flush ``path``'s bytes to the disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
