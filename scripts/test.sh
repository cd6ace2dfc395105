#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (SIPp from Debian's
# sip-tester, the Python test tools, both packages in development mode), then lints and runs
# cargo tests and pytest (property, conformance and end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v sipp >/dev/null 2>&1; then
  step "installing SIPp (Debian package sip-tester)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq sip-tester >/dev/null
fi

step "installing lcr (Rust core, release build) and softswitch, with test tools"
python3 -m pip install -q --disable-pip-version-check -e ".[test]" -e "./softswitch[speed]"

step "lint: rustfmt, clippy, ruff, mypy --strict, stubtest"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --features python -- -D warnings
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
python3 -m mypy.stubtest lcr._core

step "cargo test"
cargo test

step "pytest (the switch on uvloop, as installed with softswitch[speed])"
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}" python3 -m pytest "$@"

if [ $# -eq 0 ]; then
  # The pure-Python install (no speed extra) runs on asyncio's own loop: the transports
  # and the end-to-end call flows again on that loop.
  step "pytest: transports and end-to-end calls on the standard asyncio loop"
  SOFTSWITCH_EVENT_LOOP=asyncio python3 -m pytest -q tests/e2e \
    tests/softswitch/test_transport.py tests/softswitch/test_aiosip.py
fi
