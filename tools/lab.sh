#!/usr/bin/env bash
# The main job: two devices (each an l45-agent driving the user-space tap;
# in their own network namespaces when run as root, on loopback otherwise),
# real dnsmasq and a dig loop under the tap, and the NCO (l45-nco + its CIB):
# deploy a DNS front tag, rotate it live to DNS compression (dissertation
# figure 5.3) without a failed query, security check, status. Ctrl-C stops
# everything cleanly. Missing packages are installed by tools/install-deps.sh,
# which says what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
VENV=${L45_VENV:-.venv}
cargo build --release -p l45-agent -p l45-tap-preload -p l45-nco --quiet
export L45_AGENT="$PWD/target/release/l45-agent" L45_PRELOAD="$PWD/target/release/libl45tap.so" \
       L45_NCO="$PWD/target/release/l45-nco"
exec "$VENV/bin/python" tools/lab_demo.py
