"""Starting the window from the command line (with a clear word when there is no display)."""
from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path


def cmd_gui() -> int:
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")):
        me = sys.argv[0] if os.path.basename(sys.argv[0]) == "outpost" else "outpost"
        sys.stderr.write(
            "Outpost needs a display, and this machine has none (DISPLAY and WAYLAND_DISPLAY "
            "are unset).\n"
            "  - On a desktop: run it from a graphical session.\n"
            f"  - Headless, on a virtual X screen:  xvfb-run -a {me}   "
            "(Debian/Ubuntu: apt-get install xvfb)\n"
            f"  - Headless, no screen at all:       QT_QPA_PLATFORM=offscreen {me}\n"
            f"  - Or use the command line:          {me} ask \"hello\"   (see {me} --help)\n")
        return 2
    missing = _missing_xcb_libraries()
    if missing:
        sys.stderr.write(
            "Qt cannot open a window on this X display: these system libraries are missing: "
            f"{', '.join(missing)}.\n"
            "  Debian/Ubuntu: apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 "
            "libxcb-render-util0 libxcb-image0 libxcb-shape0 libxkbcommon-x11-0\n"
            "  Or run without a screen: QT_QPA_PLATFORM=offscreen outpost\n")
        return 2
    from ui.app import run_gui  # deferred: Qt loads only when the window opens

    return run_gui()

# Libraries Qt 6.5+'s xcb platform plugin loads; without them Qt aborts with a plugin error.
_XCB_LIBRARIES = ("xcb-cursor", "xcb-icccm", "xcb-keysyms", "xcb-render-util", "xcb-image",
                  "xcb-shape", "xkbcommon-x11")

def _missing_xcb_libraries() -> list[str]:
    if not sys.platform.startswith("linux") or not os.environ.get("DISPLAY") or \
            os.environ.get("QT_QPA_PLATFORM") or os.environ.get("WAYLAND_DISPLAY"):
        return []

    # The desktop bundle (packaging/pyinstaller) carries these libraries itself, where
    # find_library (which asks the system's linker cache) cannot see them.
    bundled = Path(sys._MEIPASS) if getattr(sys, "frozen", False) else None
    return [f"lib{name}" for name in _XCB_LIBRARIES if ctypes.util.find_library(name) is None
            and not (bundled and any(bundled.glob(f"lib{name}.so*")))]
