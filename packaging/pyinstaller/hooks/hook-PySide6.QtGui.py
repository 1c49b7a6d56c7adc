"""Takes the place of PyInstaller's own hook for PySide6.QtGui (a hook in the spec's hookspath
wins): the same collection, minus Qt's GTK3 platform theme.

That plugin links the user's libgtk-3, yet PyInstaller would bundle the GTK stack it needs (cairo,
pango, gdk-pixbuf, libX* ...) from the build machine; mixing those with the user's GTK is a known
crash, and they are tens of megabytes. Dropped here, before PyInstaller follows the plugin's
dependencies, none of them is collected. Qt then uses its own theme (and the XDG desktop portal
theme for the dark/light preference).
"""
from pathlib import Path

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

LEFT_OUT = {"libqgtk3.so"}

hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in binaries if Path(src).name not in LEFT_OUT]
