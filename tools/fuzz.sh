#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (libfuzzer-sys) on the stable
# toolchain: rustc's own SanitizerCoverage pass instruments the code, the
# crate builds and links libFuzzer. See docs/fuzzing.md.
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   fuzz each target in turn (default 600 s)
#   tools/fuzz.sh --build                            build the targets only
#   tools/fuzz.sh --list                             name the targets
#   tools/fuzz.sh --replay [TARGET...]               run each kept corpus once
#   tools/fuzz.sh --merge [TARGET...]                fold new finds into fuzz/corpus, minimized
#
# New inputs go to fuzz/work/TARGET (not kept); crashes to fuzz/artifacts/TARGET.
# Targets run one at a time under nice: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${L45_FUZZ_TARGET_DIR:-$ROOT/fuzz/target}
BIN=$CARGO_TARGET_DIR/$TRIPLE/release
ALL="framing xml edit_config filter nacm shm_table shm_shared netlink"

# What the build needs beyond the Rust toolchain: a C++ compiler for
# libFuzzer itself, cmake and PCRE2 for the bundled libyang.
deps() {
  local missing=()
  command -v c++ >/dev/null || missing+=(g++)
  command -v cmake >/dev/null || missing+=(cmake)
  dpkg -s libpcre2-dev >/dev/null 2>&1 || missing+=(libpcre2-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  deps
  # --target keeps the instrumentation off build scripts and proc macros.
  # Not --locked: fuzz/Cargo.lock follows the workspace's dependencies.
  # Debug assertions and overflow checks: a wrapped length is a bug here.
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    nice -n 10 cargo build --manifest-path fuzz/Cargo.toml --release --target "$TRIPLE" --bins --quiet
}

# The options every run shares: inputs up to 64 KiB, 10 s per input, 2 GiB.
opts() {
  local t=$1
  mkdir -p "fuzz/artifacts/$t"
  echo "-max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=$ROOT/fuzz/artifacts/$t/"
}

mode=fuzz
case "${1:-}" in
  --build) build; exit 0 ;;
  --list) echo "$ALL"; exit 0 ;;
  --replay) mode=replay; shift ;;
  --merge) mode=merge; shift ;;
  --*) echo "usage: $0 [SECONDS] [TARGET...] | --build | --replay | --merge" >&2; exit 2 ;;
  "") ;;
  *) if [[ $1 =~ ^[0-9]+$ ]]; then secs=$1; shift; fi ;;
esac
secs=${secs:-600}
targets=${*:-$ALL}
build

status=0
summary=$ROOT/fuzz/work/summary.txt
mkdir -p fuzz/work
[ "$mode" = fuzz ] && printf '%-12s %10s %6s %6s %7s %6s %s\n' target execs cov ft corpus new result > "$summary"
for t in $targets; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  case $mode in
    replay)
      # Every kept input once: a crash or a hang fails.
      if nice -n 10 "$BIN/$t" $(opts "$t") -runs=0 "$corpus" >"fuzz/work/$t.log" 2>&1; then
        echo "ok   $t ($(ls "$corpus" | wc -l) inputs)"
      else
        echo "FAIL $t (fuzz/work/$t.log)"; tail -30 "fuzz/work/$t.log"; status=1
      fi
      ;;
    merge)
      new=fuzz/work/merged-$t
      rm -rf "$new"; mkdir -p "$new" "fuzz/work/$t"
      nice -n 10 "$BIN/$t" $(opts "$t") -merge=1 "$new" "$corpus" "fuzz/work/$t" >"fuzz/work/$t.merge.log" 2>&1
      rm -rf "$corpus"; mv "$new" "$corpus"
      echo "$t: $(ls "$corpus" | wc -l) inputs kept"
      ;;
    fuzz)
      work=fuzz/work/$t
      mkdir -p "$work"
      log=fuzz/work/$t.log
      echo "== $t (${secs}s)"
      if nice -n 10 "$BIN/$t" $(opts "$t") -max_total_time="$secs" -print_final_stats=1 \
           "$work" "$corpus" >"$log" 2>&1; then result=ok; else result=CRASH; status=1; fi
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
      added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
      last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
      cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
      ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
      corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
      printf '%-12s %10s %6s %6s %7s %6s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${added:-?}" "$result" | tee -a "$summary"
      [ "$result" = ok ] || { grep -E 'panicked|ERROR|Test unit written' "$log" | head -5; }
      ;;
  esac
done
[ "$mode" = fuzz ] && echo "summary: $summary"
exit $status
