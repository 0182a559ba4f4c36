#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs the Rust unit
# tests, the YANG checks (yanglint, pyang --strict) and the interop tests
# against the real agent with ncclient, netconf-console2, yangcli and
# OpenSSH. Ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
VENV=${L45_VENV:-.venv}
passed=0; failed=0

echo "== cargo test"
if cargo test --workspace --quiet 2>&1 | tee /tmp/l45-cargo-test.log; then :; else failed=$((failed+1)); fi
p=$( (grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' /tmp/l45-cargo-test.log || true) | awk '{s+=$4; f+=$6} END {print s+0, f+0}')
passed=$((passed + ${p% *})); failed=$((failed + ${p#* }))

echo "== YANG: yanglint and pyang --strict"
for f in yang/*.yang; do
  if yanglint -p yang/ietf "$f" && "$VENV/bin/pyang" --strict -p yang/ietf "$f" >/dev/null; then
    passed=$((passed+1)); echo "ok   $f"
  else
    failed=$((failed+1)); echo "FAIL $f"
  fi
done

echo "== interop (release agent)"
cargo build --release -p l45-agent --quiet
if L45_AGENT="$PWD/target/release/l45-agent" "$VENV/bin/python" -m pytest -q tests/interop 2>&1 | tee /tmp/l45-interop.log; then :; fi
ipass=$( (grep -Eo '[0-9]+ passed' /tmp/l45-interop.log || true) | tail -1 | awk '{print $1+0}'); ipass=${ipass:-0}
ifail=$( (grep -Eo '[0-9]+ (failed|error)' /tmp/l45-interop.log || true) | awk '{s+=$1} END {print s+0}')
# A run that reports nothing (crash, collection error) counts as a failure.
if [ "$ipass" = 0 ] && [ "$ifail" = 0 ]; then ifail=1; fi
passed=$((passed+ipass)); failed=$((failed+ifail))

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
