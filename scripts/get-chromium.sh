#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser tests (the report's rendering, aezoo serve's page):
# Debian's packages where apt is usable; else those tests skip, saying why.
set -u
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
have && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Chromium and chromium-driver (Debian packages) for the browser tests..."
  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }
fi
have || echo "Chromium or chromedriver is not installed: the browser tests will be skipped." >&2
exit 0
