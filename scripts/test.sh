#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (SIPp from Debian's
# sip-tester, Debian's chromium and chromium-driver for the dashboard's browser tests,
# rtpengine from Debian's rtpengine-daemon as the media relay, Kamailio as the SIP balancer
# in front of two nodes, the
# Python test tools, both packages in development mode), then lints and runs
# cargo tests and pytest (property, conformance and end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Debian packages, installed only when missing, with one apt-get update for all of them.
# rtpengine without its recommends (the recording daemon): the tests run it in userspace.
MISSING=()
command -v sipp >/dev/null 2>&1 || MISSING+=(sip-tester)
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
command -v chromedriver >/dev/null 2>&1 || MISSING+=(chromium-driver)
MISSING_BARE=()
command -v rtpengine >/dev/null 2>&1 || MISSING_BARE+=(rtpengine-daemon)
# PostgreSQL's server binaries live off PATH (/usr/lib/postgresql/<version>/bin).
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  || MISSING_BARE+=(postgresql)
command -v redis-server >/dev/null 2>&1 || MISSING_BARE+=(redis-server)
# Kamailio lives in /usr/sbin, off a user's PATH.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || MISSING_BARE+=(kamailio)
if [ $((${#MISSING[@]} + ${#MISSING_BARE[@]})) -gt 0 ]; then
  step "installing Debian packages: ${MISSING[*]} ${MISSING_BARE[*]} (SIPp; Chromium and its WebDriver; rtpengine; PostgreSQL; Redis; Kamailio)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  if [ ${#MISSING[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
  fi
  if [ ${#MISSING_BARE[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${MISSING_BARE[@]}" >/dev/null
  fi
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
  # The pure-Python install (no speed extra) runs on asyncio's own loop: the transports,
  # aiosip and the end-to-end call flows (media relay included) again on that loop
  # (billing, statistics and the management surface are policy above the loop: once is
  # enough).
  step "pytest: transports, aiosip and end-to-end calls on the standard asyncio loop"
  SOFTSWITCH_EVENT_LOOP=asyncio python3 -m pytest -q tests/e2e/test_call_flow.py \
    tests/e2e/test_interop_dialogs.py tests/e2e/test_interop_numbers.py \
    tests/e2e/test_sipp_sip_layer.py tests/e2e/test_crash_recovery.py \
    tests/e2e/test_public_port.py tests/e2e/test_media.py tests/softswitch/test_transport.py \
    tests/softswitch/test_aiosip.py tests/softswitch/aiosip
fi
