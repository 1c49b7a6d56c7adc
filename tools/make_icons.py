"""Render resources/outpost.svg into the hicolor icon theme sizes for the desktop files.

    .venv/bin/python tools/make_icons.py [--out packaging/linux/icons]

Writes ``hicolor/<N>x<N>/apps/<APP_ID>.png`` for N in 16 22 24 32 48 64 128 256 512 and copies the
SVG to ``hicolor/scalable/apps/<APP_ID>.svg``. Rendered with Qt's own SVG renderer (QtSvg ships in
PySide6-Essentials), antialiased, on a transparent background; runs headless (offscreen). Run it
again whenever resources/outpost.svg changes, and commit the result.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "io.github.outpost_app.Outpost"  # also the .desktop and metainfo file names
SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
SOURCE = ROOT / "resources" / "outpost.svg"


def render(svg: Path, size: int, target: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not an SVG Qt can read")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(target), "PNG"):
        raise SystemExit(f"could not write {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "packaging" / "linux" / "icons",
                        help="the folder that gets hicolor/ (default: packaging/linux/icons)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # QImage needs no window
    theme = args.out / "hicolor"
    for size in SIZES:
        target = theme / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        render(SOURCE, size, target)
        print(target.relative_to(ROOT) if target.is_relative_to(ROOT) else target)
    scalable = theme / "scalable" / "apps" / f"{APP_ID}.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, scalable)
    print(scalable.relative_to(ROOT) if scalable.is_relative_to(ROOT) else scalable)
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
