"""Chat ▸ Export this chat… / Export all chats… / Import chats…: the window's side of
``app.storage.transfer`` (the same files as ``outpost export`` and ``outpost import``).

The format follows the file name chosen (.md, .html, .json); export and import run in the
background (a big ChatGPT export takes seconds) and say what they did in the status bar; a
bad file is one sentence and nothing of it is imported.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QWidget

from app.domain.wording import counted
from app.storage.store import Store
from app.storage.transfer import importer
from app.storage.transfer.export import export_pieces, format_for
from app.config.secrets import stored_keys
from app.storage.transfer.files import write_pieces
from ui.tasks import TaskRunner
from ui.window_state import documents_folder, remember_folder, start_folder

FILTERS = "Markdown (*.md);;Web page (*.html);;Outpost JSON, lossless (*.json)"
_FORMAT_NAMES = {"md": "Markdown", "json": "JSON", "html": "web page"}


def with_suffix(path: Path, chosen_filter: str) -> Path:
    """``path`` as typed, given the chosen type's suffix when it has none of the three (the
    format follows the file's name: "notes" with "Web page" chosen is notes.html, not JSON)."""
    if path.suffix.lower() in (".md", ".markdown", ".html", ".htm", ".json"):
        return path
    found = re.search(r"\(\*(\.\w+)\)", chosen_filter or "")
    return path.with_name(path.name + (found.group(1) if found else ".md"))


class TransferMenu(QObject):
    done = Signal(str)  # one sentence: what was exported or imported
    failed = Signal(object)  # an OutpostError
    imported = Signal()  # conversations were added: refresh the list

    def __init__(self, store: Store, tasks: TaskRunner, profile: Callable[[], str],
                 current: Callable[[], str | None], parent: QWidget):
        """``profile()``: the signed-in profile's name; ``current()``: the open chat's id."""
        super().__init__(parent)
        self.store, self.tasks, self.profile, self.current = store, tasks, profile, current
        self.export_one_action = QAction("E&xport this chat…", parent)
        self.export_all_action = QAction("Export &all chats…", parent)
        self.import_action = QAction("&Import chats…", parent)
        self.export_one_action.triggered.connect(lambda: self._ask_export(all_chats=False))
        self.export_all_action.triggered.connect(lambda: self._ask_export(all_chats=True))
        self.import_action.triggered.connect(self._ask_import)
        self.show_conversation(current() or "")

    @Slot(str)
    def show_conversation(self, conversation_id: str) -> None:
        """The chat open now ("": a new chat, nothing to export yet)."""
        self.export_one_action.setEnabled(bool(conversation_id))

    def actions(self) -> list[QAction]:
        return [self.export_one_action, self.export_all_action, self.import_action]

    def _ask_export(self, all_chats: bool) -> None:
        if not all_chats and self.current() is None:
            self.done.emit("Open a chat to export it (or export all chats).")
            return
        folder = start_folder("export", documents_folder)
        path, chosen = QFileDialog.getSaveFileName(self.parent(), "Export",
                                                   str(folder / "chat.md"), FILTERS)
        if path:
            remember_folder("export", path)
            self.export(with_suffix(Path(path), chosen), all_chats)

    def export(self, path: Path, all_chats: bool) -> None:
        """Write this chat (or all of the profile's) to ``path`` in the background."""
        ids = [c.id for c in sorted(self.store.list_conversations(self.profile()),
                                    key=lambda c: (c.created_at, c.id))] if all_chats \
            else [self.current()]
        fmt = format_for(str(path))

        def job() -> str:
            # written as it is read, a conversation at a time, never whole in memory
            with contextlib.closing(export_pieces(self.store, ids, fmt,
                                                  secrets=stored_keys())) as text:
                write_pieces(path, (piece.encode("utf-8") for piece in text))
            return (f"Exported {len(ids)} chat{'s' if len(ids) != 1 else ''} to {path.name} "
                    f"({_FORMAT_NAMES.get(fmt, fmt)}).")

        self.tasks.run_in_background(job, self.done.emit, self.failed.emit)

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.parent(), "Import chats", str(start_folder("import", documents_folder)),
            "Outpost or ChatGPT export (*.json);;All files (*)")
        if path:
            remember_folder("import", path)
            self.import_file(Path(path))

    def import_file(self, path: Path) -> None:
        profile = self.profile()

        def job() -> str:
            summary = importer.write(self.store, importer.load(path), profile)
            added = f"; {counted(summary.added_messages, 'new message')} added to " \
                f"{counted(len(summary.continued), 'chat')}" if summary.continued else ""
            skipped = f"; {len(summary.skipped)} already here, skipped" if summary.skipped \
                else ""
            backup = " (a backup was taken first)" if summary.backup else ""
            return (f"Imported {counted(len(summary.imported), 'chat')} from {path.name}"
                    f"{added}{skipped}{backup}.")

        def finished(text: str) -> None:
            self.imported.emit()
            self.done.emit(text)

        self.tasks.run_in_background(job, finished, self.failed.emit)
