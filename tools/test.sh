#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs the Rust unit
# tests, the YANG checks (yanglint, pyang --strict), the interop tests
# against the real agent (ncclient, netconf-console2, yangcli, OpenSSH) and
# the user-space tap tests with real programs (dig, dnsmasq, curl, python
# http.server, openssl, nginx, tcpdump, tshark), the NCO end to end, the lab, and
# the kernel tap's VM tests (kmod/vm-test.sh: qemu, ~12 min cold, ~1 min with
# the kernel cached). Ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
VENV=${L45_VENV:-.venv}
passed=0; failed=0

echo "== cargo test"
if cargo test --workspace --quiet 2>&1 | tee /tmp/l45-cargo-test.log; then :; else failed=$((failed+1)); fi
p=$( (grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' /tmp/l45-cargo-test.log || true) | awk '{s+=$4; f+=$6} END {print s+0, f+0}')
passed=$((passed + ${p% *})); failed=$((failed + ${p#* }))

echo "== module images: the example kind and the template (own workspaces)"
# no_std cdylibs with panic = "abort": their tests run apart from the
# workspace's (`--lib`: the image itself cannot build with unwinding).
for kind in modules/examples/*/ modules/kind-template/; do
  log=/tmp/l45-kind-$(basename "$kind").log
  if (cd "$kind" && cargo test --lib --quiet --target-dir "$OLDPWD/target/kinds") 2>&1 | tee "$log"; then :; else failed=$((failed+1)); fi
  p=$( (grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" || true) | awk '{s+=$4; f+=$6} END {print s+0, f+0}')
  passed=$((passed + ${p% *})); failed=$((failed + ${p#* }))
done

echo "== YANG: yanglint and pyang --strict"
# -y: libyang's built-in ietf-yang-library and ietf-datastores (imported by
# ietf-netconf-nmda), as the agent's context has them.
for f in yang/*.yang yang/ietf/*.yang; do
  if yanglint -y -p yang/ietf "$f" && "$VENV/bin/pyang" --strict -p yang/ietf "$f" >/dev/null; then
    passed=$((passed+1)); echo "ok   $f"
  else
    failed=$((failed+1)); echo "FAIL $f"
  fi
done

echo "== import cycles (tools/check_cycles.py)"
if python3 tools/check_cycles.py; then passed=$((passed+1)); else failed=$((failed+1)); fi

echo "== fuzz targets: 15 s each from the kept corpora (tools/fuzz.sh, docs/fuzzing.md)"
# The instrumented build is cached outside the clone, as the kernel is.
export L45_FUZZ_TARGET_DIR=${L45_FUZZ_TARGET_DIR:-$HOME/.cache/l45-fuzz/target}
if tools/fuzz.sh --build; then
  for t in $(tools/fuzz.sh --list); do
    if tools/fuzz.sh 15 "$t"; then passed=$((passed+1)); else failed=$((failed+1)); fi
  done
else
  failed=$((failed+1)); echo "FAIL fuzz build"
fi

echo "== interop and tap tests (release agent, preload library, real programs)"
cargo build --release -p l45-agent -p l45-tap-preload -p l45-nco --quiet
cargo build --release -p l45-modules --bin l45-dissector --quiet
export L45_AGENT="$PWD/target/release/l45-agent" L45_PRELOAD="$PWD/target/release/libl45tap.so" \
       L45_DISSECTOR="$PWD/target/release/l45-dissector" L45_NCO="$PWD/target/release/l45-nco"
# One pytest run per folder: each has its own conftest helpers.
for suite in tests/*/; do
  [ -n "$(ls "$suite"test_*.py 2>/dev/null)" ] || continue
  log=/tmp/l45-pytest-$(basename "$suite").log
  echo "-- $suite"
  if "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$suite" 2>&1 | tee "$log"; then :; fi
  ipass=$( (grep -Eo '[0-9]+ passed' "$log" || true) | tail -1 | awk '{print $1+0}'); ipass=${ipass:-0}
  ifail=$( (grep -Eo '[0-9]+ (failed|error)' "$log" || true) | awk '{s+=$1} END {print s+0}')
  # A run that reports nothing (crash, collection error) counts as a failure.
  if [ "$ipass" = 0 ] && [ "$ifail" = 0 ]; then ifail=1; fi
  passed=$((passed+ipass)); failed=$((failed+ifail))
done

echo "== kernel tap: Rust-for-Linux module in a qemu VM (kmod/vm-test.sh)"
# Builds (or reuses, cached under ~/.cache/l45-kernel) a 6.12 kernel with
# Rust, the module and an initramfs, boots it under TCG and runs the VM
# tests; its last line is "N passed, N failed".
if kmod/vm-test.sh 2>&1 | tee /tmp/l45-vm-test.log; then :; fi
vline=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/l45-vm-test.log | tail -1 || true)
if [ -n "$vline" ]; then
  vpass=${vline%% passed*}; vfail=${vline#*passed, }; vfail=${vfail%% failed}
else
  vpass=0; vfail=1   # the script did not get as far as reporting
fi
passed=$((passed + vpass)); failed=$((failed + vfail))

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
