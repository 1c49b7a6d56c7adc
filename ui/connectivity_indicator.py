"""The status bar's per-provider link lights: a coloured dot and the name of each provider the
window is using, with the state, since when, and the last probe time in the tooltip."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from app.chat.connectivity import Connectivity, LinkState
from ui import theme

WORDS = {LinkState.ONLINE: "online", LinkState.DEGRADED: "degraded",
         LinkState.OFFLINE: "offline", LinkState.UNKNOWN: "not checked yet"}


def describe(connectivity: Connectivity, name: str) -> str:
    """One provider's line for the tooltip, e.g. 'openai: offline (unreachable since 10:42);
    last probe 10:47:03'."""
    link = connectivity.link(name)
    text = f"{name}: {WORDS[link.state]}"
    if link.state in (LinkState.OFFLINE, LinkState.DEGRADED):
        text += f" ({connectivity.reason(name)})"
    elif link.since is not None:
        text += f" since {link.since.strftime('%H:%M:%S')}"
    text += "; last probe " + (link.last_probe_at.strftime("%H:%M:%S")
                                if link.last_probe_at else "none yet")
    return text


class ConnectivityIndicator(QWidget):
    def __init__(self, connectivity: Connectivity, parent: QWidget | None = None):
        super().__init__(parent)
        self.connectivity = connectivity
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(4, 0, 4, 0)
        self._layout.setSpacing(10)
        self.labels: dict[str, QLabel] = {}
        theme.on_palette_change(self, self._recolour)

    def show_providers(self, names: list[str]) -> None:
        """Show these providers (those the window uses now), refreshed from the tracker."""
        for name in list(self.labels):
            if name not in names:
                label = self.labels.pop(name)
                self._layout.removeWidget(label)
                label.deleteLater()
        for name in names:
            label = self.labels.get(name)
            if label is None:
                label = self.labels[name] = QLabel()
                self._layout.addWidget(label)
            state = self.connectivity.state(name)
            probe = self.connectivity.link(name).last_probe_at
            checked = f" · {probe.strftime('%H:%M')}" if probe else ""
            label.setText(f"<span style='color:{theme.state_colour(state.value)}'>●</span> "
                          f"{name} <span style='color:{theme.muted_text()}'>"
                          f"{WORDS[state]}{checked}</span>")
            label.setToolTip(describe(self.connectivity, name))
        self.setVisible(bool(names))

    def _recolour(self) -> None:
        if self.labels:
            self.show_providers(list(self.labels))

    def state_text(self, name: str) -> str:
        return self.labels[name].text() if name in self.labels else ""
