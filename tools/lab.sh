#!/usr/bin/env bash
# The main job: two devices on loopback (each an l45-agent driving the
# user-space tap), real dnsmasq and a dig loop under the tap, a DNS front tag
# deployed over NETCONF and rotated live to DNS compression (dissertation
# figure 5.3) without a failed query. Ctrl-C stops everything cleanly.
# The orchestrator (NCO) takes over the NETCONF side when it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
VENV=${L45_VENV:-.venv}
cargo build --release -p l45-agent -p l45-tap-preload --quiet
export L45_AGENT="$PWD/target/release/l45-agent" L45_PRELOAD="$PWD/target/release/libl45tap.so"
exec "$VENV/bin/python" tools/lab_demo.py
