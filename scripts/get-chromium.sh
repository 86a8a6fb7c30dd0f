#!/usr/bin/env bash
# Headless Chromium for the report-rendering test: Debian's package where apt is usable; else the test skips.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Chromium (Debian package chromium) for the report test..."
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }
fi
command -v chromium >/dev/null 2>&1 || echo "Chromium is not installed: the report-rendering test will be skipped." >&2
exit 0
