"""The desktop bundle and its desktop files (packaging/).

The bundle is built from scratch with packaging/pyinstaller/outpost.spec into a temporary folder
(about a minute on two cores; `make package` is not needed first), then run the way a field
worker's machine runs it: ``env -i`` with only HOME, OUTPOST_HOME and PATH=/usr/bin:/bin (so no
venv, no PYTHONPATH), from an empty working folder, and with no network (``unshare -rn``: a new
network namespace with only a loopback). Its self-check (packaging/pyinstaller/bundle_check.py)
proves from inside that the data PyInstaller cannot see made it in. The build time and size
are written to tests/artifacts/bundle.txt; nothing asserts on them, nor on what the model says.

`make test` installs what this needs (tools/system_packages.sh): binutils, desktop-file-utils,
appstream, util-linux.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "packaging" / "pyinstaller" / "outpost.spec"
LINUX = ROOT / "packaging" / "linux"
APP_ID = "io.github.outpost_app.Outpost"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
BARE_PATH = "/usr/bin:/bin"

# What the bundle may take from the machine it runs on: glibc and the graphics stack, which must
# match the machine's drivers (PyInstaller leaves these out on purpose; see its dylib.py).
SYSTEM_LIBRARIES = re.compile(
    r"(ld-linux.*|lib(c|m|dl|pthread|rt|resolv|util|GL|GLX|GLdispatch|EGL|OpenGL|GLESv2|drm|gbm|"
    r"xcb|wayland-(client|cursor|egl|server))\.so[.\d]*)")

pytestmark = pytest.mark.timeout(900)  # the first test that uses the bundle also builds it


def tool(name: str, package: str) -> str:
    """A system tool the checks need; `make test` installs it (tools/system_packages.sh), so a
    missing one is a failure."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (`make test` does)")
    return found


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a machine without Python: only what a login session would have."""
    return {"HOME": str(home), "OUTPOST_HOME": str(home / "outpost"), "PATH": BARE_PATH, **extra}


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


# -- the desktop files, as committed -----------------------------------------------------------

def test_desktop_entry_is_valid():
    validate = tool("desktop-file-validate", "desktop-file-utils")
    entry = LINUX / f"{APP_ID}.desktop"
    result = subprocess.run([validate, str(entry)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Icon={APP_ID}\n" in entry.read_text()


def test_metainfo_is_valid_and_matches_the_files():
    appstreamcli = tool("appstreamcli", "appstream")
    metainfo = LINUX / f"{APP_ID}.metainfo.xml"
    # --no-net: the screenshot and homepage URLs are placeholders (nothing is published yet)
    result = subprocess.run([appstreamcli, "validate", "--no-net", str(metainfo)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    component = ET.parse(metainfo).getroot()
    assert component.findtext("id") == APP_ID
    assert component.findtext("launchable") == f"{APP_ID}.desktop"
    for image in component.iter("image"):
        shot = LINUX / "screenshots" / image.text.rsplit("/", 1)[-1]
        assert png_size(shot) == (int(image.get("width")), int(image.get("height")))


def test_icons_in_every_hicolor_size():
    apps = LINUX / "icons" / "hicolor"
    for size in ICON_SIZES:
        assert png_size(apps / f"{size}x{size}" / "apps" / f"{APP_ID}.png") == (size, size)
    scalable = apps / "scalable" / "apps" / f"{APP_ID}.svg"
    assert scalable.read_bytes() == (ROOT / "resources" / "outpost.svg").read_bytes(), \
        "the icons are stale: run tools/make_icons.py"


def test_screenshots_in_a_light_and_a_dark_palette():
    for theme in ("light", "dark"):
        assert png_size(LINUX / "screenshots" / f"outpost-{theme}.png") == (1200, 750)


# -- the bundle --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory, artifacts_dir) -> Path:
    """dist/Outpost, built now into a temporary folder; removed after this module."""
    tool("objdump", "binutils")  # PyInstaller reads ELF files with it
    work = tmp_path_factory.mktemp("bundle")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--distpath", str(work / "dist"), "--workpath", str(work / "build"), str(SPEC)],
        cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    built = work / "dist" / "Outpost"
    size = subprocess.run(["du", "-sh", str(built)], capture_output=True, text=True).stdout.split()[0]
    note = f"bundle built in {seconds:.0f} s, {size} (du -sh), PyInstaller from {sys.executable}\n"
    (artifacts_dir / "bundle.txt").write_text(note)
    print(note, end="")
    yield built
    shutil.rmtree(work, ignore_errors=True)  # a third of a gigabyte; keep no old copies


@pytest.fixture(scope="module")
def offline() -> list[str]:
    """The prefix that runs a command with no network: a new, empty network namespace."""
    unshare = tool("unshare", "util-linux")
    probe = subprocess.run([unshare, "-rn", "cat", "/proc/net/dev"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"`unshare -rn` does not work here (user namespaces disabled?): {probe.stderr}")
    interfaces = [line.split(":")[0].strip() for line in probe.stdout.splitlines()[2:]]
    assert interfaces == ["lo"], interfaces
    return [unshare, "-rn"]


def run_bundle(bundle: Path, args: list[str], home: Path, prefix: Sequence[str] = (),
               timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    work = home / "cwd"
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*prefix, str(bundle / "outpost"), *args], cwd=work,
                          env=bare_env(home, **env), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_bundle_answers_offline_without_python(bundle, offline, tmp_path):
    result = run_bundle(bundle, ["ask", "--route", "local", "--max-tokens", "8", "hi"], tmp_path,
                        offline)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), f"no answer printed; stderr: {result.stderr}"
    assert (tmp_path / "outpost" / "data" / "outpost.db").is_file()  # OUTPOST_HOME honoured


@pytest.mark.slow
def test_bundle_help(bundle, tmp_path):
    result = run_bundle(bundle, ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: outpost")


@pytest.mark.slow
def test_bundle_takes_only_glibc_and_graphics_from_the_system(bundle):
    """Every library the bundle's binaries link comes from the bundle, except glibc and the
    graphics stack (so nothing was lost when the spec pruned the GTK theme's libraries)."""
    internal = bundle / "_internal"
    foreign = set()
    for path in internal.rglob("*.so*"):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as file:
            if file.read(4) != b"\x7fELF":
                continue
        linked = subprocess.run(["ldd", str(path)], capture_output=True, text=True,
                                env={"PATH": BARE_PATH, "LD_LIBRARY_PATH": str(internal)}).stdout
        for line in linked.splitlines():
            name, arrow, target = line.strip().partition(" => ")
            if arrow and not SYSTEM_LIBRARIES.fullmatch(name) and \
                    not target.startswith(str(internal)):
                foreign.add(f"{path.relative_to(internal)}: {name} => {target}")
    assert not foreign, "\n".join(sorted(foreign))


def _secret_service_here() -> bool:
    """Whether a Secret Service keychain answers in this session (make test starts one with
    gnome-keyring), asked from the venv's Python in a fresh process."""
    probe = "import keyring.backends.SecretService as s; s.Keyring.priority"  # raises when not
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
def test_bundle_self_check(bundle, tmp_path):
    """Resources, model, llama_cpp's libraries, tiktoken's plugin, keyring's backends, certifi,
    Qt's platform plugins and the real window, checked from inside the bundle. With the test
    suite's D-Bus session (make test starts one, with gnome-keyring), the bundle must use the
    Secret Service keychain, as the venv can."""
    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    result = run_bundle(bundle, [], tmp_path, OUTPOST_BUNDLE_CHECK="1", QT_QPA_PLATFORM="offscreen",
                        LD_LIBRARY_PATH="/opt/user-libs",
                        **({"DBUS_SESSION_BUS_ADDRESS": bus} if bus else {}))
    report = result.stdout
    assert result.returncode == 0, report + result.stderr[-3000:]
    assert "0 failed" in report, report
    assert "LD_LIBRARY_PATH for child programs '/opt/user-libs'" in report, report
    if bus and _secret_service_here():
        assert "in use: keyring.backends.SecretService.Keyring" in report, report


@pytest.mark.slow
def test_bundle_opens_the_window(bundle, tmp_path):
    """`outpost` with no command: the window opens (offscreen) and stays open until closed."""
    work = tmp_path / "cwd"
    work.mkdir()
    database = tmp_path / "outpost" / "data" / "outpost.db"
    proc = subprocess.Popen([str(bundle / "outpost")], cwd=work,
                            env=bare_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not database.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # past start-up: a missing plugin or module would have ended it by now
        still_running = proc.poll() is None
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert database.exists(), stderr
    assert still_running, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_install_desktop_into_a_fresh_home(bundle, tmp_path):
    """`make install-desktop` with the bundle just built: XDG folders of a temporary home, a
    valid menu entry whose Exec needs no PATH, a working `outpost` link; then uninstall."""
    validate = tool("desktop-file-validate", "desktop-file-utils")
    home = tmp_path / "home dir"  # a space, as some homes have: Exec must be quoted
    data = home / ".local" / "share"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(data), "PATH": BARE_PATH}
    make = shutil.which("make")
    install = subprocess.run([make, "-s", "-C", str(ROOT), "install-desktop",
                              f"DIST_DIR={bundle.parent}"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    entry = data / "applications" / f"{APP_ID}.desktop"
    checked = subprocess.run([validate, str(entry)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    installed = data / "outpost-bundle" / "outpost"
    assert f'Exec="{installed}"\n' in entry.read_text()
    assert (data / "metainfo" / f"{APP_ID}.metainfo.xml").is_file()
    for size in ICON_SIZES:
        assert (data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png").is_file()
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg").is_file()
    link = home / ".local" / "bin" / "outpost"
    assert link.resolve() == installed.resolve()
    for program in (installed, link):  # what the menu entry and a terminal run
        ran = subprocess.run([str(program), "--help"], env=bare_env(home), capture_output=True,
                             text=True, cwd=tmp_path, timeout=120)
        assert ran.returncode == 0 and ran.stdout.startswith("usage: outpost"), ran.stderr

    removed = subprocess.run([make, "-s", "-C", str(ROOT), "uninstall-desktop"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not entry.exists() and not installed.exists() and not link.exists()
    assert not list(data.glob(f"icons/hicolor/*/apps/{APP_ID}.*"))
    assert bundle.joinpath("outpost").is_file()  # the bundle that was installed from is kept
