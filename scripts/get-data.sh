#!/usr/bin/env bash
# Make Fashion-MNIST available: Debian's dataset-fashion-mnist package when apt is usable, otherwise say how.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -n "${AEZOO_DATA:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
      { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }
    [ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
  fi
fi
cat >&2 <<MSG
Fashion-MNIST is not installed. Either run (as root) 'apt-get install dataset-fashion-mnist',
or put the four IDX files (train-images-idx3-ubyte.gz, ...) in a folder and set AEZOO_DATA to it;
aezoo otherwise downloads them into ~/.cache/aezoo on first use.
MSG
exit 0
