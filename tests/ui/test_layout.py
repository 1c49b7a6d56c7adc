"""Nothing clipped (issue 15): at 900x600 and 1600x1000 every label of the status bar, the
header and the reply footers is as wide as its text (labels that elide on purpose, like the chat
title, show the whole text in their tooltip; the header's pickers end a text too long for them
with "…"), the Sampling panel only scrolls up and down, and
the conversation list and the title keep a usable width."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QToolButton

from tests.support import grab_in_palette, reply, send
from ui.elided_label import ElidedLabel

pytestmark = pytest.mark.gui

REPLY = ("Here is a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> a quote\n\n"
         "```python\nprint('hi')\n```\nDone.")


def clipped(labels) -> list[str]:
    out = []
    for label in labels:
        if not label.isVisible() or label.wordWrap() or isinstance(label, ElidedLabel) \
                or not label.text():
            continue
        if label.width() + 1 < label.sizeHint().width():
            out.append(f"{label.text()!r}: {label.width()} < {label.sizeHint().width()}")
    return out


@pytest.mark.parametrize("size", [(900, 600), (1600, 1000)])
def test_nothing_is_clipped(qtbot, scripted, scripted_engine, size, artifacts_dir):
    window = scripted.window
    scripted_engine.script(reply(REPLY))
    send(qtbot, scripted, "What is the best way to keep a lighthouse lit all night long?")
    window.resize(*size)
    qtbot.wait(100)
    assert (window.width(), window.height()) == size  # the window can be that small
    status = window.statusBar().findChildren(QLabel)
    footers = [label for bubble in window.view.bubbles
               for label in bubble.findChildren(QLabel) if label is not bubble.body]
    header = [label for label in window.findChildren(QLabel)
              if label.parent() is window.title_label.parent() and label is not window.title_label]
    assert clipped(status + footers + header) == []
    for picker in (window.route_picker, window.target_picker):  # whole, or ending in "…"
        shown = picker.shown_text()
        assert picker.fontMetrics().horizontalAdvance(shown) <= picker.text_width(), shown
        assert shown == picker.currentText() or shown.endswith("…") and \
            picker.currentText().startswith(shown[:-1]), (shown, picker.currentText())
    assert window.title_label.width() >= 300  # the title has a line of its own
    assert window.title_label.toolTip().startswith("What is the best way")
    assert window.sidebar.width() >= 150
    assert "scripted-model.gguf" in window.model_label.toolTip()  # whole, even when cut
    if window.sampling.isVisible():  # (a narrow window's panel steps aside: sampling_room)
        scroll = window.sampling.widget()
        assert scroll.widget().width() <= scroll.viewport().width()  # up and down only
    window.grab().save(str(artifacts_dir / f"layout-{size[0]}x{size[1]}.png"))


def shows_whole(label) -> bool:
    """Whether ``label`` shows all its text: on the lines it wraps to, or on its one line."""
    if label.wordWrap():
        return label.height() >= label.heightForWidth(label.width())
    return label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()


def test_the_token_meter_never_widens_the_window(qtbot, scripted, artifacts_dir):
    """At the window's narrowest, the meter's line ("34 prompt tokens · 546 / 4,096 context
    (with 512 for the reply) · free") wraps, whole, rather than push the window wider than the
    user made it."""
    window = scripted.window
    window.resize(window.minimumWidth(), 700)  # (the Sampling panel steps aside)
    qtbot.waitUntil(lambda: window.width() == window.minimumWidth())
    narrowest = window.width()
    qtbot.keyClicks(window.composer.edit, "Tell me about the history of lighthouses in three "
                                          "sentences, please, with their keepers and lamps.")
    meter = window.meter.label
    qtbot.waitUntil(lambda: "context" in meter.text(), timeout=10000)
    qtbot.wait(50)  # (a layout pass, where a wider minimum would grow the window)
    assert window.width() == narrowest
    assert window.minimumSizeHint().width() <= narrowest
    assert shows_whole(meter), meter.text()
    window.grab().save(str(artifacts_dir / "token-meter-narrowest.png"))


def test_the_token_meter_is_whole_at_the_default_size(qtbot, scripted, artifacts_dir):
    """At the default 1200x750 with the Sampling panel open, a long draft's meter ended in
    "…" mid-sentence ("120,062 prompt tokens · 120,074 / 4,096 context (with 12 for the rep…"),
    hiding what the count was made of: it wraps to a second line, and the box stays as high."""
    window = scripted.window
    window.resize(1200, 750)
    qtbot.waitUntil(lambda: window.size().toTuple() == (1200, 750))
    assert window.sampling.isVisible()
    edit_height = window.composer.edit.height()
    window.composer.edit.setPlainText("word " * 120_000)  # as the newcomer pasted
    meter = window.meter.label
    qtbot.waitUntil(lambda: "reply" in meter.text(), timeout=10000)
    qtbot.wait(50)  # (a layout pass)
    assert shows_whole(meter), (meter.text(), meter.size())
    assert window.size().toTuple() == (1200, 750)
    assert window.composer.edit.height() == edit_height
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"token-meter-long-draft-{theme}.png",
                        theme)


def test_the_status_bar_is_whole_at_the_narrowest_window(qtbot, scripted, scripted_engine):
    """With the Sampling panel hidden and the window as narrow as it goes, every status bar
    label and button shows its whole text or ends in "…" (whole in its tooltip); a reply's
    figures arriving do not widen the window."""
    from PySide6.QtWidgets import QAbstractButton

    window = scripted.window
    window.sampling.hide()
    qtbot.waitUntil(lambda: window.minimumWidth() < 800)  # the panel's width given back
    window.resize(200, 700)
    qtbot.waitUntil(lambda: window.width() == window.minimumWidth())  # clamped there
    narrowest = window.width()
    assert narrowest >= window.statusBar().minimumSizeHint().width()
    scripted_engine.script(reply("Water 20 L, rice 5 kg."))
    send(qtbot, scripted, "The supplies?")
    qtbot.wait(50)
    assert window.width() == narrowest
    assert window.metrics_label.text().startswith("TTFT")
    status = window.statusBar()
    labels = [label for label in status.findChildren(QLabel) if label.isVisible()]
    assert clipped(labels) == []
    for button in status.findChildren(QAbstractButton):
        if button.isVisible():
            assert button.width() >= button.sizeHint().width(), button.text()
    for label in labels:  # a label cut short says it all in its tooltip
        if isinstance(label, ElidedLabel) and label.width() < label.sizeHint().width():
            assert label.toolTip(), label.text()
    assert window.metrics_label.text() in window.metrics_label.toolTip()


def test_a_replys_actions_never_widen_the_chat(qtbot, scripted, scripted_engine):
    """A reply with versions (‹ 1/2 ›), hovered, at 1100 px with the Sampling panel open: its
    role line (versions, Copy · Regenerate · Fork · Delete, Details) fits the column; the
    bubbles are never pushed wider than the chat (their right edges and Details cut)."""
    window = scripted.window
    window.resize(1100, 750)
    scripted_engine.script(reply("First answer."), reply("Another answer."))
    send(qtbot, scripted, "What is a lighthouse?")
    view = window.view
    answer = view.bubbles[1]
    answer.set_actions_visible(True)
    qtbot.waitUntil(answer.actions_bar.regenerate_button.isVisible)
    qtbot.mouseClick(answer.actions_bar.regenerate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.bubbles[1].text == "Another answer.", timeout=20000)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    answer = view.bubbles[1]
    qtbot.waitUntil(lambda: answer.switcher.isVisible())
    answer.set_actions_visible(True)
    qtbot.wait(50)
    assert view.widget().width() <= view.viewport().width()
    for bubble in view.bubbles:
        assert bubble.geometry().right() <= view.viewport().width(), bubble.text
    bar = answer.actions_bar
    assert bar.isVisible() and all(button.width() >= button.sizeHint().width()
                                   for button in bar.findChildren(QToolButton)
                                   if button.isVisible())


def test_the_status_bar_says_where_the_layers_are_once(qtbot):
    """"Local model: m.gguf · CPU, 2 threads" then "Ready (context 4096)": the placement was
    said twice ("Ready (CPU, 2 threads, context 4096)"), crowding the bar."""
    from engines.base import EngineInfo
    from ui.model_menu import ModelStatus

    class Loader:
        active = None

    status = ModelStatus(Loader())
    status.show_model(EngineInfo("local", "m.gguf", detail="CPU, 2 threads, context 4096",
                                 placement="CPU, 2 threads"))
    assert status.model_label.text() == "Local model: m.gguf · CPU, 2 threads"
    assert status.state_label.text() == "Ready (context 4096)"


def test_the_context_box_steps_through_the_usual_sizes(qtbot):
    """Models ▸ load settings: from "auto" the arrows go 512, 1,024, 2,048 … and back to
    "auto" (they went 1,279, 2,303 …); a size typed stays as typed."""
    from ui.model_manager import ContextBox

    box = ContextBox()
    qtbot.addWidget(box)
    shown = []
    for _ in range(4):
        box.stepBy(1)
        shown.append(box.value())
    assert shown == [512, 1024, 2048, 4096]
    box.setValue(3000)
    box.stepBy(-1)
    assert box.value() == 2048
    box.setValue(512)
    box.stepBy(-1)
    assert box.text() == "auto" and box.value() == ContextBox.AUTO
    box.trained = 8192  # a model trained on 8,192 tokens: the arrows stop there
    box.setValue(8192)
    box.stepBy(1)
    assert box.value() == 8192


def test_picking_a_cloud_provider_keeps_the_chat_lists_width(qtbot, scripted, artifacts_dir):
    """The model picker that comes with a cloud provider made the header's one line wider
    than the chat, and the splitter took it from the chat list (250 px down to 200), the
    route cut to "Auto (cloud, local fal…" all the same. The header goes on two lines instead:
    the list keeps its width, and the route and provider show whole."""
    from app.config.providers import ProviderConfig

    window = scripted.window
    window.resize(1200, 800)
    window.show()
    qtbot.waitUntil(lambda: window.width() == 1200)
    qtbot.wait(50)  # (a layout pass)
    sizes = window.splitter.sizes()
    scripted.registry.add(ProviderConfig("box", "openai", "http://127.0.0.1:9/v1", "llama3.2"))
    window.target_picker.refresh("provider:box")
    qtbot.waitUntil(window.model_picker.isVisible)
    qtbot.waitUntil(lambda: window.route_picker.currentText() == "Auto (cloud, local fallback)")
    qtbot.wait(50)
    assert window.splitter.sizes() == sizes
    pickers = window.header_pickers
    assert pickers.wrapped()  # two lines at this width
    for picker in (window.route_picker, window.target_picker):
        assert picker.shown_text() == picker.currentText()  # whole
    assert window.model_picker.width() >= window.model_picker.minimumWidth()
    assert window.route_picker.x() == window.target_picker.x()  # the boxes line up
    window.grab().save(str(artifacts_dir / "header-two-lines.png"))

    window.resize(1700, 800)  # room for one line: back on one
    qtbot.waitUntil(lambda: not pickers.wrapped())
    qtbot.wait(50)  # (a layout pass)
    assert window.route_picker.y() == window.target_picker.y()  # one line
    for picker in (window.route_picker, window.target_picker):
        assert picker.shown_text() == picker.currentText()
    window.grab().save(str(artifacts_dir / "header-one-line.png"))


def test_on_one_line_each_picker_gets_the_width_its_text_needs(qtbot, scripted):
    """One line with room for both texts whole shared its width 1:2 between the route and the
    provider, and the route read "Auto (local: no provi…" at 1200x750 (the screenshots' size)
    though the provider's box had width to spare."""
    window = scripted.window
    window.resize(1200, 750)
    window.show()
    qtbot.waitUntil(lambda: window.width() == 1200)
    qtbot.wait(50)  # (a layout pass)
    pickers = window.header_pickers
    assert not pickers.wrapped() and pickers.width() >= pickers.one_line_width()
    for picker in (window.route_picker, window.target_picker):
        assert picker.shown_text() == picker.currentText()  # whole


LONG_MODEL = ("accounts/fireworks/models/llama-v3p1-405b-instruct-long-context-preview-"
              "2025-01-15-experimental")


def test_a_longer_model_name_moves_the_header_to_two_lines_at_once(qtbot, scripted):
    """The model picker (an editable box) did not take part: a longer model name, typed or
    brought back with a chat, stayed cut on one line (the header measured the box's first
    size, and never looked again until a resize). Now the header looks again as the name
    changes, and goes on two lines, where the model's box gets the width its name needs (the
    provider's and the model's boxes shared their line 1:1)."""
    from app.config.providers import ProviderConfig

    window = scripted.window
    window.resize(1700, 800)
    window.show()
    qtbot.waitUntil(lambda: window.width() == 1700)
    scripted.registry.add(ProviderConfig("box", "openai", "http://127.0.0.1:9/v1", "llama3.2"))
    window.target_picker.refresh("provider:box")
    qtbot.waitUntil(window.model_picker.isVisible)
    pickers, model = window.header_pickers, window.model_picker
    qtbot.waitUntil(lambda: not pickers.wrapped())  # room for it all on one line

    def whole() -> bool:
        edit = model.lineEdit()
        return edit.width() >= edit.fontMetrics().horizontalAdvance(model.currentText()) + 5

    edit = model.lineEdit()
    edit.selectAll()
    qtbot.keyClicks(edit, LONG_MODEL)  # typed: the line cannot show it whole any more
    assert model.currentText() == LONG_MODEL
    qtbot.waitUntil(pickers.wrapped)
    qtbot.waitUntil(whole)

    model.choose("llama3.2")  # a chat with a short name: back on one line
    qtbot.waitUntil(lambda: not pickers.wrapped())
    model.choose(LONG_MODEL)  # a chat that remembers the long one: two lines again
    qtbot.waitUntil(pickers.wrapped)
    qtbot.waitUntil(whole)


def test_the_empty_chats_hint_wraps_in_a_narrow_chat(qtbot, scripted):
    """At 820 px with the Sampling panel open, the hint of an empty chat was cut at the right
    ("type below and press Ent", a trial): it wraps to the chat's width. (The panel steps aside
    in a window that narrow now: the narrowest window's chat is narrower still.)"""
    window = scripted.window
    window.resize(window.minimumWidth(), 774)
    qtbot.waitUntil(lambda: window.size().toTuple() == (window.minimumWidth(), 774))
    view, hint = window.view, window.view._empty
    qtbot.waitUntil(hint.isVisible)
    assert view.viewport().width() < max(hint.fontMetrics().horizontalAdvance(line)
                                         for line in hint.text().splitlines())  # (narrower)
    qtbot.waitUntil(lambda: view.widget().width() <= view.viewport().width())
    assert hint.geometry().right() <= view.viewport().width()
    assert shows_whole(hint), (hint.text(), hint.size())


def laid_out_height(label) -> int:
    """The height ``label``'s text takes, wrapped at the label's width (what it must show)."""
    from PySide6.QtCore import QRect

    box = QRect(0, 0, label.contentsRect().width(), 100000)
    return label.fontMetrics().boundingRect(box, Qt.TextFlag.TextWordWrap,
                                            label.text()).height()


@pytest.mark.parametrize("cause", ["down", "rate_limited_120"])
def test_a_queued_replys_long_footer_is_whole_at_every_width(qtbot, scripted, cause,
                                                             artifacts_dir):
    """Cloud only, the provider down (or a 429 asking for 120 s): the empty reply's footer says
    why and that the message is queued, on four or five lines. At 940-970 px its first and last
    lines were half cut (a trial): the bubble was held to its size hint, which a wrapped label
    reckons at about 80 characters a line, not at the width it has."""
    from tests.fault_server import fault_server, rate_limited, refused_url
    from tests.ui.test_gui_outbox import use_provider

    app, window = scripted, scripted.window
    if cause == "down":
        with refused_url() as down:
            use_provider(app, "acme", down + "/v1", route="cloud")
            send(qtbot, app, "Water levels at the north well, please")
            app.tasks.wait()
    else:
        with fault_server() as server:
            server.script([rate_limited(retry_after=120)] * 4)
            use_provider(app, "acme", server.url + "/v1", route="cloud")
            send(qtbot, app, "Water levels at the north well, please")
            app.tasks.wait()
    bubble = window.view.bubbles[-1]
    footer = bubble.footer
    assert "Queued in the outbox" in footer.text(), footer.text()
    assert footer.text().endswith("acme · test-model")
    for width in range(940, 975, 5):
        window.resize(width, 774)
        qtbot.wait(20)  # (the layout requests posted by the resize)
        bubble.grab()
        need = max(footer.heightForWidth(footer.width()), laid_out_height(footer))
        assert footer.height() >= need, (width, footer.width(), footer.height(), need)
        assert footer.geometry().bottom() < bubble.contentsRect().bottom()
    for name in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"queued-footer-{cause}-{name}.png", name)
    app.window.close()
    app.shutdown()


@pytest.mark.parametrize("route", ["auto", "cloud", "local"])
def test_no_header_picker_overlaps_another_or_passes_the_chat(qtbot, scripted, route,
                                                              artifacts_dir):
    """At 1200 px with the Sampling panel docked, Cloud only and Local only kept one line
    though it had no room: the header measured the route's text ("Cloud only", 100 px), not
    its box (14 characters at least), and the provider's box (585-705) ran under the model's
    (678-798), which ran 22 px past the chat, under the panel. At every width and route, no
    two of the header's boxes overlap and none passes the chat's right edge."""
    from app.config.providers import ProviderConfig

    window = scripted.window
    window.resize(1200, 800)
    window.show()
    scripted.registry.add(ProviderConfig("box", "openai", "http://127.0.0.1:9/v1", "llama3.2"))
    window.target_picker.refresh("provider:box")
    qtbot.waitUntil(window.model_picker.isVisible)
    picker = window.route_picker
    picker.setCurrentIndex(picker.findData(route))
    picker.activated.emit(picker.currentIndex())
    labels = window.header_pickers.labels
    boxes = (labels[0], picker, labels[1], window.target_picker, window.model_picker)
    for width in (1400, 1300, 1200, 1150, 1100, 1000, 900):
        window.resize(width, 800)
        qtbot.waitUntil(lambda: window.width() == width)  # noqa: B023 (waited on here)
        qtbot.wait(50)  # (a layout pass)
        chat_right = window.view.mapTo(window, window.view.rect().topRight()).x()
        rects = [(box, box.rect().translated(box.mapTo(window, box.rect().topLeft())))
                 for box in boxes if box.isVisible()]
        for box, rect in rects:
            assert rect.right() <= chat_right, (width, route, type(box).__name__)
        for i, (first, one) in enumerate(rects):
            for second, other in rects[i + 1:]:
                assert not one.intersects(other), \
                    (width, route, type(first).__name__, type(second).__name__)
        if width == 1200:
            for theme in ("light", "dark"):
                grab_in_palette(qtbot, window, artifacts_dir /
                                f"header-{route}-{width}-{theme}.png", theme)
