#!/usr/bin/env bash
# The browser tests need Debian's Chromium and its driver at /usr/bin; install them when missing.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi

fail() {
  echo "install-browser: $1" >&2
  echo "install-browser: install Chromium and its driver (Debian: apt-get install chromium" \
    "chromium-driver) so that /usr/bin/chromium and /usr/bin/chromedriver exist." >&2
  exit 1
}

command -v apt-get >/dev/null || fail "/usr/bin/chromium or /usr/bin/chromedriver is missing and there is no apt-get here."
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || fail "installing needs root, and sudo is not available."
  sudo=(sudo)
fi

echo "install-browser: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq || fail "apt-get update failed."
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver \
  || fail "apt-get install chromium chromium-driver failed."
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
  || fail "apt-get finished but /usr/bin/chromium or /usr/bin/chromedriver is still missing."
