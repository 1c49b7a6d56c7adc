"""Background jobs (ui/tasks.py): a result reaches its widget on the GUI thread, and a result
for a widget deleted while its job ran is dropped, not delivered to a dead object."""
from __future__ import annotations

import threading

import shiboken6
from PySide6.QtWidgets import QLabel, QWidget

from ui.tasks import TaskRunner


class Meter(QWidget):
    """Shows a result on a child, as the token meter does."""

    def __init__(self):
        super().__init__()
        self.label = QLabel(self)
        self.results: list = []

    def show_result(self, result) -> None:
        self.label.setText(str(result))  # raised "already deleted" once the widget was gone
        self.results.append(result)

    def failed(self, exc) -> None:
        self.label.setText(str(exc))


def test_a_result_for_a_deleted_widget_is_dropped(qtbot):
    """The window's token meter counted in the background; closing the window before the count
    came back raised "Internal C++ object (QProgressBar) already deleted" inside the event
    loop (seen as a flaky teardown error in the window tests)."""
    runner = TaskRunner()
    gone, kept = Meter(), Meter()
    release = threading.Event()
    runner.run_in_background(lambda: release.wait(5) and 1, gone.show_result, gone.failed)
    runner.run_in_background(lambda: 2, kept.show_result, kept.failed)
    shiboken6.delete(gone)
    release.set()
    assert runner.wait(5000)
    qtbot.waitUntil(lambda: kept.results == [2], timeout=5000)
    qtbot.waitUntil(lambda: not runner._relays, timeout=5000)  # the dropped one's came too
    assert not shiboken6.isValid(gone)
    kept.deleteLater()
