"""The chat header's pickers: the route, then who answers in the cloud (the provider and its
model), on one line when the header is wide enough to show their texts whole, else on two lines,
the route above, the provider and model below, their labels one width so the boxes line up.

Its least width is that of the two lines: picking a cloud provider shows the model picker,
which on one line made the chat's least width grow past what it had, and the splitter took
the difference from the chat list (250 px down to 200) while the route was cut to "Auto
(cloud, local fal…" anyway. Now the header wraps instead, and the list keeps its width.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QBoxLayout, QComboBox, QHBoxLayout, QLabel, QWidget

from ui.eliding_combo import whole_width

_ONE_LINE, _TWO_LINES = QBoxLayout.Direction.LeftToRight, QBoxLayout.Direction.TopToBottom
_BETWEEN = {_ONE_LINE: 8, _TWO_LINES: 4}  # px between the two parts, side by side or stacked


def _whole_width(widget: QWidget) -> int:
    """The width ``widget`` needs to show its text whole (a combo box: the text it holds now,
    an editable one's too: its size hint is its items' as first shown), and never less than
    the layout gives it at least: "Cloud only" needs 100 px, but the route's box is 14
    characters wide at least, and one line measured with the text alone was 40 px short (the
    provider and the model overlapped at 1200 px with the Sampling panel open)."""
    whole = whole_width(widget) if isinstance(widget, QComboBox) else widget.sizeHint().width()
    return max(whole, widget.minimumWidth() or widget.minimumSizeHint().width())


class HeaderPickers(QWidget):
    """Route, cloud provider and model (see the module docstring); ``wrapped()`` says whether
    they stand on two lines."""

    def __init__(self, route: tuple[QLabel, QWidget], cloud: tuple[QLabel, QWidget, QWidget],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.labels = (route[0], cloud[0])
        self.parts = (self._part(route), self._part(cloud))
        self.box = QBoxLayout(_ONE_LINE, self)
        self.box.setContentsMargins(16, 0, 0, 0)
        self.box.setSpacing(_BETWEEN[_ONE_LINE])
        self.box.addWidget(self.parts[0], 1)  # (the stretches: see _place)
        self.box.addWidget(self.parts[1], 2)
        for widget in (*route[1:], *cloud[1:]):
            if isinstance(widget, QComboBox):  # a longer text (typed too) may need the width
                widget.currentTextChanged.connect(self._place)

    @staticmethod
    def _part(widgets) -> QWidget:
        part = QWidget()
        line = QHBoxLayout(part)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(widgets[0])
        for widget in widgets[1:]:
            line.addWidget(widget, 1)
        return part

    def wrapped(self) -> bool:
        return self.box.direction() == _TWO_LINES

    @staticmethod
    def _whole_part(part: QWidget) -> int:
        """What ``part`` (a label and its pickers) needs to show its texts whole."""
        shown = [part.layout().itemAt(i).widget() for i in range(part.layout().count())]
        shown = [w for w in shown if w is not None and not w.isHidden()]
        return sum(_whole_width(w) for w in shown) + \
            part.layout().spacing() * max(0, len(shown) - 1)

    def one_line_width(self) -> int:
        """What one line needs to show every label and picker whole."""
        margins = self.box.contentsMargins()
        return margins.left() + margins.right() + _BETWEEN[_ONE_LINE] + \
            sum(self._whole_part(part) for part in self.parts)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        """As narrow as the two lines may be, whichever way it stands now, and the same with
        the model picker shown or hidden (a provider picked never makes the chat wider)."""
        margins = self.box.contentsMargins()
        labels = max(label.sizeHint().width() for label in self.labels)
        narrowest = 0
        for part in self.parts:
            layout = part.layout()
            pickers = [layout.itemAt(i).widget() for i in range(1, layout.count())]
            narrowest = max(narrowest, labels + layout.spacing() * len(pickers) + sum(
                w.minimumWidth() or w.minimumSizeHint().width() for w in pickers))
        return QSize(narrowest + margins.left() + margins.right(),
                     super().minimumSizeHint().height())

    def _place(self) -> None:
        direction = _TWO_LINES if self.width() < self.one_line_width() else _ONE_LINE
        # on one line, the width is shared in proportion to what each part needs whole, so
        # each gets at least that (shared 1:2, the route was cut to "Auto (local: no provi…"
        # though the line had room for it whole)
        for index, part in enumerate(self.parts):
            self.box.setStretch(index, max(1, self._whole_part(part))
                                if direction == _ONE_LINE else 0)
            # inside a part likewise: the provider and a long model name (shared 1:1, the
            # model was cut though the provider's box had width to spare)
            line = part.layout()
            assert isinstance(line, QHBoxLayout)  # (``_part``)
            for i in range(1, line.count()):
                item = line.itemAt(i)
                widget = item.widget() if item is not None else None
                if widget is not None:
                    line.setStretch(i, max(1, _whole_width(widget)))
        if direction == self.box.direction():
            return
        self.box.setDirection(direction)
        self.box.setSpacing(_BETWEEN[direction])
        widest = max(label.sizeHint().width() for label in self.labels)
        for label in self.labels:  # on two lines, the boxes start at one x
            label.setMinimumWidth(widest if direction == _TWO_LINES else 0)
        self.updateGeometry()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._place()

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:  # a picker shown or hidden (the model)
            self._place()
        return super().event(event)
