"""A self-check of the frozen bundle: ``OUTPOST_BUNDLE_CHECK=1 outpost`` (the Qt part needs a
display, or QT_QPA_PLATFORM=offscreen; OUTPOST_BUNDLE_CHECK_SCREENSHOT=file.png also saves the
window as the bundle drew it).

It proves that what PyInstaller cannot see by itself made it into the bundle, from inside the
bundle, and prints one ``name: detail`` line per check ("ok" or "FAILED"); the exit status is the
number of failures. tests/packaging/test_bundle.py runs it; support staff can ask a user for its output.
Nothing here is sent anywhere or stored.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable

WINDOW_TIMEOUT_MS = 120_000


def _environment() -> str:
    """Run first, before llama_cpp adds its own folder to LD_LIBRARY_PATH."""
    library_path = os.environ.get("LD_LIBRARY_PATH")
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle and library_path and bundle in library_path.split(os.pathsep):
        raise RuntimeError(f"programs Outpost starts would get the bundle's libraries: "
                           f"LD_LIBRARY_PATH={library_path}")
    return (f"frozen {getattr(sys, 'frozen', False)}, LD_LIBRARY_PATH for child programs "
            f"{library_path!r}, stdout {sys.stdout.encoding} (UTF-8 mode {sys.flags.utf8_mode})")


def _model() -> str:
    from engines.model_files import bundled_model_path

    path = bundled_model_path()
    return f"{path} ({path.stat().st_size // 2**20} MiB)"


def _llama() -> str:
    import llama_cpp

    return f"llama_cpp {llama_cpp.__version__}, {llama_cpp.llama_cpp._lib._name}"


def _tokenizers() -> str:
    import tiktoken.registry

    from app.accounting.tokens import count_text

    counted = count_text("A field report, filed offline.", "gpt-4o")
    if not (counted.exact and counted.method == "tiktoken:o200k_base"):
        raise RuntimeError(f"not counted by tiktoken: {counted}")
    names = tiktoken.registry.list_encoding_names()  # the tiktoken_ext plugin, found by pkgutil
    if "o200k_base" not in names:
        raise RuntimeError(f"tiktoken_ext.openai_public not discovered: {names}")
    return f"{counted.tokens} tokens by {counted.method}"


def _keyring() -> str:
    """keyring finds its backends through entry points: its dist-info must be bundled, and the
    Secret Service backend must have its secretstorage/jeepney imports."""
    from importlib.metadata import entry_points

    import keyring
    import keyring.backends.SecretService as secret_service

    names = sorted(ep.name for ep in entry_points(group="keyring.backends"))
    if "SecretService" not in names:
        raise RuntimeError(f"keyring's entry points are missing: {names}")
    if not hasattr(secret_service, "secretstorage"):
        raise RuntimeError("secretstorage is not bundled: the Secret Service backend cannot work")
    if any(ep.value.startswith("keyrings.") for ep in entry_points(group="keyring.backends")):
        raise RuntimeError("the test-only keyrings.alt was bundled")
    backend = keyring.get_keyring()
    return (f"backends {', '.join(names)}; in use: {type(backend).__module__}."
            f"{type(backend).__name__} (priority {float(backend.priority):g})")


def _certifi() -> str:
    import certifi

    path = Path(certifi.where())
    if path.stat().st_size < 10_000:
        raise RuntimeError(f"{path} is too small")
    return str(path)


def _resources() -> str:
    from app.config.paths import resource

    files = [resource("prices.json"), resource("context_windows.json"), resource("outpost.svg"),
             resource("tokenizers", "o200k_base.tiktoken")]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise RuntimeError(f"missing: {missing}")
    return str(files[0].parent)


def _qt_plugins() -> str:
    from PySide6.QtCore import QLibraryInfo

    platforms = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    present = sorted(path.name for path in platforms.glob("*.so"))
    wanted = ["libqoffscreen.so", "libqwayland.so", "libqxcb.so"]
    lacking = [name for name in wanted if name not in present]
    if lacking:
        raise RuntimeError(f"{lacking} not in {platforms} ({present})")
    return ", ".join(present)


def _window() -> str:
    """The real window, built as `outpost` builds it, until the bundled model has loaded."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app.config.paths import resource
    from ui.app import OutpostApp

    qt_app = QApplication.instance() or QApplication([sys.argv[0]])
    if QIcon(str(resource("outpost.svg"))).pixmap(64, 64).isNull():
        raise RuntimeError("the SVG icon did not render (iconengines/imageformats plugins)")
    outpost = OutpostApp()
    loop = QEventLoop()
    outcome: list[str] = []
    outpost.loader.model_ready.connect(lambda info: (outcome.append("ready"), loop.quit()))
    outpost.loader.load_failed.connect(lambda why: (outcome.append(why), loop.quit()))
    QTimer.singleShot(WINDOW_TIMEOUT_MS, loop.quit)
    try:
        outpost.start()
        loop.exec()
        shown = outpost.window.isVisible()
        shot = os.environ.get("OUTPOST_BUNDLE_CHECK_SCREENSHOT")  # to look at fonts and icons
        if shot and not outpost.window.grab().save(shot):
            raise RuntimeError(f"could not save the screenshot to {shot}")
    finally:
        outpost.shutdown()
        outpost.window.close()
    if outcome != ["ready"] or not shown:
        raise RuntimeError(f"window shown: {shown}, model: {outcome or 'timed out'}")
    return f"platform {qt_app.platformName()}, window shown, local model loaded"


CHECKS: dict[str, Callable[[], str]] = {
    "environment": _environment, "resources": _resources, "model": _model, "llama_cpp": _llama, "tokenizers": _tokenizers,
    "keyring": _keyring, "certifi": _certifi, "qt_plugins": _qt_plugins, "window": _window,
}


def run() -> int:
    failures = 0
    for name, check in CHECKS.items():
        try:
            print(f"{name}: ok: {check()}", flush=True)
        except Exception:  # every failure is reported, then the next check runs
            failures += 1
            detail = traceback.format_exc().strip().replace("\n", "\n    ")
            print(f"{name}: FAILED: {detail}", flush=True)
    print(f"bundle check: {len(CHECKS) - failures} ok, {failures} failed", flush=True)
    return failures
