#!/usr/bin/env bash
# The main job, for now: builds the agent, starts it on loopback with a fresh
# state directory, and walks through what an NCO does to it over NETCONF
# (deploy, inspect, rotate priorities, revoke). The full multi-device lab
# with the NCO and real DNS traffic through the tap comes with the NCO and
# tap issues.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
VENV=${L45_VENV:-.venv}
cargo build --release -p l45-agent --quiet
work=$(mktemp -d)
trap 'kill "$agent_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM
ssh-keygen -q -t ed25519 -N "" -f "$work/nco_key"
port=${L45_PORT:-18830}
target/release/l45-agent --listen "127.0.0.1:$port" --state-dir "$work/state" \
  --authorized-keys "admin:$work/nco_key.pub" > "$work/agent.out" 2> "$work/agent.log" &
agent_pid=$!
# Wait for the agent's ready line instead of sleeping.
while ! grep -q "listening on" "$work/agent.out" 2>/dev/null; do
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; exit 1; }
  sleep 0.05
done
cat "$work/agent.out"
echo "Talk to it yourself while this runs, e.g.:"
echo "  $VENV/bin/netconf-console2 --host 127.0.0.1 --port $port -u admin --privKeyFile $work/nco_key --get-config"
"$VENV/bin/python" tools/lab_demo.py "$port" "$work/nco_key"
