#!/usr/bin/env sh
# Debian packages the test suite needs beyond the machine image, installed by `make test` (and so
# by .ci/run) when it runs as root with apt-get; otherwise it names what to install.
#   gnome-keyring, dbus     a real OS keychain (SecretService) for the keychain tests
#   binutils                PyInstaller reads libraries with objdump (tests/packaging/test_bundle.py)
#   desktop-file-utils, appstream   desktop-file-validate / appstreamcli for packaging/linux
#   util-linux              unshare: the bundle and the wheel answer with no network
#   libxcb-*, libxkbcommon-x11-0    Qt's xcb plugin needs them; the bundle carries them
set -eu
PACKAGES="gnome-keyring dbus binutils desktop-file-utils appstream util-linux libxcb-cursor0 \
libxcb-icccm4 libxcb-keysyms1 libxcb-render-util0 libxcb-image0 libxcb-shape0 libxkbcommon-x11-0"

command -v dpkg-query >/dev/null 2>&1 || { echo "note: not a Debian system: install the equivalents of: $PACKAGES"; exit 0; }
missing=""
for pkg in $PACKAGES; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing="$missing $pkg"
done
[ -n "$missing" ] || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages the tests need:$missing"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
  echo "note: the tests need these Debian packages; install them as root: apt-get install$missing"
fi
