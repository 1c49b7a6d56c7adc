"""The core and the engines never import Qt; llama_cpp loads only when a model is used."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def loaded_after(*imports: str) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {list(imports)!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


def test_core_and_engines_never_import_qt():
    modules = loaded_after("app", "app.cli", "app.chat.service", "app.storage.store",
                           "app.config.settings", "app.domain.messages", "engines",
                           "engines.llama_local", "engines.registry", "engines.gguf",
                           "engines.chat_format", "engines.model_files")
    assert "PySide6" not in modules
    assert "shiboken6" not in modules
    assert "ui" not in modules
    assert "app" in modules and "engines" in modules  # the imports really happened


@pytest.mark.parametrize("module", ["engines.registry", "app.cli", "app.chat.service",
                                    "engines.llama_local"])
def test_llama_cpp_is_imported_lazily(module):
    modules = loaded_after(module)
    assert "llama_cpp" not in modules
    assert "PySide6" not in modules


@pytest.mark.local_model
def test_a_headless_turn_never_imports_qt(bundled_model):
    """Running a whole turn (store, service, local engine) in a fresh process loads no Qt."""
    code = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from app.chat.service import ChatService, TurnOptions\n"
        "from app.config.settings import Settings\n"
        "from app.storage.store import Store\n"
        "from engines.registry import create_local_engine\n"
        "settings = Settings()\n"
        "store = Store()\n"
        "engine = create_local_engine(settings)\n"
        "turn = ChatService(store, settings).start_turn('hi', model='m',"
        " options=TurnOptions(max_tokens=2))\n"
        "list(turn.run(engine, threading.Event()))\n"
        "engine.close()\n"
        "print('llama_cpp' in sys.modules, 'PySide6' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]
