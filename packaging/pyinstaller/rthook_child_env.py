"""PyInstaller runtime hook: programs Outpost starts (xdg-open for a link in a reply, and the
browser it runs) get the user's own LD_LIBRARY_PATH, not the bundle's.

The bootloader points LD_LIBRARY_PATH at the bundle's _internal/ folder and keeps the user's value
in LD_LIBRARY_PATH_ORIG. This process's dynamic loader read the variable when it started, so
restoring it changes nothing here; a system program started with the bundle's libraries first
(glib, libstdc++, OpenSSL, ...) can fail to start. PyInstaller's manual recommends the same
("Launching external programs from the frozen application").
"""
import os

_original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
if _original is not None:
    os.environ["LD_LIBRARY_PATH"] = _original
else:
    os.environ.pop("LD_LIBRARY_PATH", None)
