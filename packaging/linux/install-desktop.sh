#!/bin/sh
# Install the Outpost bundle for the current user, with its menu entry, icons and AppStream data.
#
#   ./install-desktop.sh               from inside an unpacked bundle (dist/Outpost/)
#   ./install-desktop.sh BUNDLE_DIR    any bundle folder (`make install-desktop` does this)
#   ./install-desktop.sh --uninstall   remove what an install put there (never your conversations)
#
# Needs no root and no Python. Where things go (XDG base directories):
#   ${XDG_DATA_HOME:-~/.local/share}/outpost-bundle/            the program (this bundle, copied)
#   ${XDG_DATA_HOME:-~/.local/share}/applications/APP_ID.desktop the menu entry (Exec is an absolute
#                                                                path, so ~/.local/bin need not be on PATH)
#   ${XDG_DATA_HOME:-~/.local/share}/icons/hicolor/*/apps/       icons, PNG sizes and SVG
#   ${XDG_DATA_HOME:-~/.local/share}/metainfo/                   AppStream data for software centres
#   ${OUTPOST_BIN_DIR:-~/.local/bin}/outpost                     a link for the terminal (an existing
#                                                                `outpost` that is not ours is left alone)
# Outpost's own data (~/.local/share/Outpost, ~/.config/Outpost) is never touched.
set -eu

APP_ID=io.github.outpost_app.Outpost
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
BIN_DIR="${OUTPOST_BIN_DIR:-$HOME/.local/bin}"
DEST="$DATA/outpost-bundle"

die() { echo "install-desktop: $*" >&2; exit 1; }

# The Desktop Entry spec's quoting for an Exec argument: plain paths as they are; others in double
# quotes with " ` $ \ escaped, and then every backslash doubled (Exec is also an escaped string).
exec_arg() {
  case $1 in
    *[!A-Za-z0-9/._+-]*)
      printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"`$]/\\&/g; s/\\/\\\\/g')" ;;
    *) printf '%s' "$1" ;;
  esac
}

uninstall() {
  rm -f "$DATA/applications/$APP_ID.desktop" "$DATA/metainfo/$APP_ID.metainfo.xml"
  for icon in "$DATA"/icons/hicolor/*/apps/"$APP_ID".png "$DATA"/icons/hicolor/*/apps/"$APP_ID".svg; do
    if [ -e "$icon" ]; then rm -f "$icon"; fi
  done
  if [ -L "$BIN_DIR/outpost" ] && [ "$(readlink "$BIN_DIR/outpost")" = "$DEST/outpost" ]; then
    rm -f "$BIN_DIR/outpost"
  fi
  rm -rf "$DEST"
  if [ -d "$DATA/icons/hicolor" ]; then touch "$DATA/icons/hicolor"; fi
  echo "Outpost removed (your conversations and settings are kept)."
}

install_bundle() {
  src=$(cd "$1" && pwd)
  [ -x "$src/outpost" ] && [ -d "$src/_internal" ] && [ -d "$src/share" ] ||
    die "$src is not an Outpost bundle (build one with: make package)"
  case $DEST in *'
'*) die "cannot install into a path with a newline: $DEST" ;; esac

  # Copy first, then swap: a running Outpost keeps its old files until it quits.
  mkdir -p "$DATA"
  rm -rf "$DEST.new"
  cp -R "$src" "$DEST.new"
  rm -rf "$DEST.old"
  if [ -e "$DEST" ]; then mv "$DEST" "$DEST.old"; fi
  mv "$DEST.new" "$DEST"
  rm -rf "$DEST.old"

  share="$DEST/share"
  mkdir -p "$DATA/applications" "$DATA/metainfo"
  # Exec and TryExec name the installed program by its absolute path (through ENVIRON: awk -v
  # would interpret backslashes).
  OUTPOST_EXEC=$(exec_arg "$DEST/outpost") \
  OUTPOST_TRYEXEC=$(printf '%s' "$DEST/outpost" | sed 's/\\/\\\\/g') \
    awk '/^TryExec=/ { next }
         /^Exec=/ { print "TryExec=" ENVIRON["OUTPOST_TRYEXEC"]; print "Exec=" ENVIRON["OUTPOST_EXEC"]; next }
         { print }' "$share/applications/$APP_ID.desktop" > "$DATA/applications/$APP_ID.desktop.tmp"
  mv "$DATA/applications/$APP_ID.desktop.tmp" "$DATA/applications/$APP_ID.desktop"
  cp "$share/metainfo/$APP_ID.metainfo.xml" "$DATA/metainfo/"
  for icon in "$share"/icons/hicolor/*/apps/*; do
    size_dir=$(dirname "$(dirname "$icon")")
    mkdir -p "$DATA/icons/hicolor/${size_dir##*/}/apps"
    cp "$icon" "$DATA/icons/hicolor/${size_dir##*/}/apps/"
  done
  touch "$DATA/icons/hicolor"  # tells desktops the icon theme changed

  mkdir -p "$BIN_DIR"
  if [ -L "$BIN_DIR/outpost" ] || [ ! -e "$BIN_DIR/outpost" ]; then
    ln -sfn "$DEST/outpost" "$BIN_DIR/outpost"
    link_note="and $BIN_DIR/outpost for the terminal"
  else
    link_note="($BIN_DIR/outpost exists and is not ours: left alone)"
  fi
  echo "Outpost installed in $DEST"
  echo "  menu entry: $DATA/applications/$APP_ID.desktop $link_note"
  case ":${PATH:-}:" in
    *":$BIN_DIR:"*) ;;
    *) echo "  note: $BIN_DIR is not on PATH; the menu entry works anyway" ;;
  esac
}

case ${1:-} in
  --uninstall) uninstall ;;
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" ;;
  *) install_bundle "${1:-$(dirname "$0")}" ;;
esac
