"""Retake the AppStream screenshots from the real window: a light and a dark palette.

    .venv/bin/python tools/take_screenshots.py [--out packaging/linux/screenshots]

Builds the window exactly as ``outpost`` does (``ui.app.OutpostApp``), headless (Qt's offscreen
platform), with its data in a throw-away OUTPOST_HOME so your own conversations never appear.
Each theme gets a fresh window: the bundled local model loads, one question is typed into the
composer and sent with Enter, and the window is grabbed once the real reply has finished
(temperature 0 and a fixed seed, so reruns usually show the same text). Writes
``outpost-light.png`` and ``outpost-dark.png`` at 1200x750 (``--size 900x600`` adds the size
to the names); the palettes are ui.theme's, applied as the app applies them. Look at them before
committing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (1200, 750)
PROMPT = "How do I keep drinking water safe on a field trip?"
MAX_TOKENS = 100
TIMEOUT_MS = 180_000


def palette(theme: str):
    """The palette of ``theme`` ("light" or "dark"): ui.theme's, the one the app uses."""
    from ui.theme import dark_palette, light_palette

    return dark_palette() if theme == "dark" else light_palette()


def wait_for(signals, timeout_ms: int = TIMEOUT_MS) -> list:
    """Run Qt's event loop until one of ``signals`` fires; what each fired with, in order."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop, fired = QEventLoop(), []
    for signal in signals:
        signal.connect(lambda *args, s=signal: (fired.append((s, args)), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    return fired


def shoot(theme: str, out: Path, size: tuple[int, int] = SIZE) -> Path:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.config.settings import Settings
    from ui.app import OutpostApp
    from ui.theme import apply_theme

    apply_theme(QApplication.instance(), theme)
    with tempfile.TemporaryDirectory(prefix=f"outpost-shots-{theme}-") as home:
        os.environ["OUTPOST_HOME"] = home
        settings = Settings()
        settings.set("max_tokens", MAX_TOKENS)
        settings.set("temperature", 0.0)
        outpost = OutpostApp(settings=settings)
        window = outpost.window
        try:
            window.resize(*size)
            ready = outpost.loader.model_ready
            outpost.start()
            if not any(signal is ready for signal, _ in wait_for([ready, outpost.loader.load_failed])):
                raise SystemExit("the local model did not load")
            edit = window.composer.edit
            edit.setFocus()
            QTest.keyClicks(edit, PROMPT)
            QTest.keyClick(edit, Qt.Key.Key_Return)
            if not wait_for([window.controller.reply_finished]):
                raise SystemExit("no reply within the time limit")
            # the last throttled flush and the footer (not QTest.qWait: it keeps the GIL,
            # so the window's other threads stand still meanwhile)
            wait_for([], 300)
            suffix = "" if size == SIZE else f"-{size[0]}x{size[1]}"
            target = out / f"outpost-{theme}{suffix}.png"
            out.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(target)):
                raise SystemExit(f"could not write {target}")
            return target
        finally:
            outpost.shutdown()
            window.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "packaging" / "linux" / "screenshots")
    parser.add_argument("--theme", choices=["light", "dark", "both"], default="both")
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}",
                        help="WIDTHxHEIGHT; other than the default, it goes in the file name")
    args = parser.parse_args(argv)
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    qt_app = QApplication(sys.argv[:1])
    qt_app.setApplicationName("Outpost")
    width, height = (int(n) for n in args.size.lower().split("x"))
    # the offscreen screen is 800x800, and every window fits its screen (ui.screen_fit): the
    # shot is of a desktop's window, on a screen with room for it
    from PySide6.QtCore import QRect

    import ui.screen_fit
    ui.screen_fit.available_geometry = lambda _widget: QRect(0, 0, max(1920, width),
                                                              max(1080, height))
    for theme in (["light", "dark"] if args.theme == "both" else [args.theme]):
        print(shoot(theme, args.out.resolve(), (width, height)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
