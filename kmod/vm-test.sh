#!/usr/bin/env bash
# Kernel-tap tests in a VM: builds (or reuses) the kernels, builds the module,
# the release agent and l45-ktest, packs an initramfs with busybox, dig,
# dnsmasq, ssh and their libraries, boots it under qemu (TCG) and runs
# kmod/vm/tests.sh there. Prints exactly one "N passed, N failed" line at the
# end (exit status non-zero if any failed).
#
# Two kernels: the tests run on the test kernel (kmod/kernel.config: lockdep,
# atomic-sleep checks, KCOV), the benchmark on the benchmark kernel
# (kmod/kernel-bench.config: the same without the debug checks), in a second
# boot. Benchmark ratios are written to $L45_KBENCH_OUT (default
# /tmp/l45-kbench.txt); L45_BENCH=0 skips the benchmark (and its kernel),
# L45_TESTS=0 the tests (the benchmark only); L45_VM_ONLY=NAME,NAME runs
# only those tests (names as in vm/tests.sh's run lines, e.g.
# kind_image_through_agent,dmesg_clean).
# L45_KFUZZ_SECONDS (default 60) is how long the netlink fuzzer runs;
# L45_KFUZZ_KEEP=1 adds its new inputs to fuzz/corpus/kernel_netlink.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
t0=$(date +%s)
log() { echo "[vm-test] $*" >&2; }
bench_on=${L45_BENCH:-1}
only=${L45_VM_ONLY:-}

ktree=$("$here/build-kernel.sh" "$here/kernel.config" | tail -1)
[[ -f $ktree/arch/x86/boot/bzImage ]] || { log "no kernel"; echo "0 passed, 1 failed"; exit 1; }
btree=
if [[ $bench_on != 0 ]]; then
  btree=$("$here/build-kernel.sh" "$here/kernel-bench.config" | tail -1)
  [[ -f $btree/arch/x86/boot/bzImage ]] || { log "no benchmark kernel"; echo "0 passed, 1 failed"; exit 1; }
fi
t_kernel=$(date +%s)

work=$(mktemp -d /tmp/l45-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
bindgen=${L45_KERNEL_CACHE:-$HOME/.cache/l45-kernel}/tools/bin/bindgen
# build_module TREE OUT: the module for the kernel in TREE (a build for
# another tree is cleaned first: Kbuild keys objects to their commands).
build_module() {
  make -s -C "$here" KDIR="$1" clean >&2
  make -s -C "$here" KDIR="$1" BINDGEN="$bindgen" >&2
  cp "$here/l45.ko" "$2"
}
[[ -z $btree ]] || build_module "$btree" "$work/l45-bench.ko"
build_module "$ktree" "$work/l45-test.ko"   # last: kmod/l45.ko stays the test kernel's
# a kind module (a module kind that is not built in) for the test kernel
BINDGEN="$bindgen" "$here/kind/build.sh" "$here/test-kind" "$ktree" "$work" >/dev/null
(cd "$root" && cargo build --release -q -p l45-agent -p l45-ktest -p l45-nco >&2)
target=${CARGO_TARGET_DIR:-$root/target}
# The example kind as module images signed by a throw-away NCO (its CIB and
# key in $work/nco): the kernel image for the test kernel, and a user-space
# image of the kind (tests/fixtures/kind-crate, built in a copy) that the
# kernel agent must refuse; with the NCO's public key and the install-module
# RPCs (too big for an argument) in /img for kind_image_through_agent.
nco() { "$target/release/l45-nco" --cib "$work/nco/cib.sqlite" "$@"; }
mkdir -m 0700 "$work/nco"; mkdir "$work/img"
BINDGEN="$bindgen" nco images build "$root/modules/examples/udp-xor-mask" --kernel-tree "$ktree" --out "$work/img" >&2
cp -r "$root/tests/fixtures/kind-crate" "$work/ukind"
nco images build "$work/ukind" --out "$work/img" >&2
nco images key | sed -n 's/^public key: ed25519://p' > "$work/img/nco.pub"
[[ -s $work/img/nco.pub ]] || { log "no NCO public key"; echo "0 passed, 1 failed"; exit 1; }
# install_rpc IMAGE: install-module of IMAGE, IMAGE.manifest and IMAGE.sig
# (the manifest is plain text without markup, its bytes kept exactly)
install_rpc() {
  local manifest
  manifest=$(cat "$1.manifest"; echo x); manifest=${manifest%x}
  printf '<install-module xmlns="urn:layer45:params:xml:ns:yang:layer45-customization"><image>%s</image><manifest>%s</manifest><signature>%s</signature></install-module>\n' \
    "$(base64 -w0 "$1")" "$manifest" "$(base64 -w0 "$1.sig")"
}
t_build=$(date +%s)

ir=$work/root
mkdir -p "$ir"/{bin,sbin,usr/bin,etc,proc,sys,dev,tmp,root,var/run,lib,lib64}
cp /bin/busybox "$ir/bin/busybox"; ln -s busybox "$ir/bin/sh"
copy_bin() { # copies a dynamically linked program and its libraries
  local src=$1 dst=$2
  cp -L "$src" "$ir$dst"
  ldd "$src" | grep -o '/[^ ]*' | while read -r lib; do
    [[ -e $ir$lib ]] || { mkdir -p "$ir$(dirname "$lib")"; cp -L "$lib" "$ir$lib"; }
  done
}
copy_bin "$target/release/l45-agent" /bin/l45-agent
copy_bin "$target/release/l45-ktest" /bin/l45-ktest
copy_bin "$(command -v dig)" /usr/bin/dig
copy_bin "$(command -v dnsmasq)" /usr/bin/dnsmasq
copy_bin "$(command -v ssh)" /usr/bin/ssh
copy_bin "$(command -v openssl)" /usr/bin/openssl
mkdir -p "$ir/kfuzz"; cp "$root"/fuzz/corpus/kernel_netlink/* "$ir/kfuzz/" 2>/dev/null || true
cp "$work/l45_kind_udp_xor_test.ko" "$ir/"
mkdir "$ir/img"
cp "$work/img/udp-xor-mask.ko.manifest" "$work/img/nco.pub" "$ir/img/"
install_rpc "$work/img/udp-xor-mask.ko" > "$ir/img/install-ko.xml"
install_rpc "$work/img/udp-xor-mask.so" > "$ir/img/install-so.xml"
cp "$here/vm/init" "$ir/init"; cp "${L45_VM_TESTS:-$here/vm/tests.sh}" "$ir/tests.sh"; chmod +x "$ir/init"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ir/etc/group"
printf 'nameserver 127.0.0.1\n' > "$ir/etc/resolv.conf"
printf 'passwd: files\ngroup: files\nhosts: files\n' > "$ir/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$ir/etc/hosts"
ssh-keygen -q -t ed25519 -N '' -f "$ir/root/key"
# a throw-away certificate for the TLS test (openssl s_server in the VM)
OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=l45-vm -days 2 -keyout "$ir/root/tls.key" -out "$ir/root/tls.crt" 2>/dev/null

kfuzz=${L45_KFUZZ_SECONDS:-60}
# boot NAME TREE MODULE MODE [QEMU ARGS...]: one VM with MODULE as
# /l45.ko; MODE is what tests.sh does (L45_BENCH: 0 the tests, only the
# benchmark). The console, without carriage returns, ends up in
# $work/NAME.txt.
boot() {
  local name=$1 tree=$2 module=$3 mode=$4
  shift 4
  cp "$module" "$ir/l45.ko"
  (cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/$name.cpio.gz"
  log "booting the $name VM (TCG)"
  set +e
  # (no_timer_check: on a starved host the boot-time IO-APIC timer check
  # can fail under TCG and panic the guest)
  timeout "${L45_VM_TIMEOUT:-$((900 + kfuzz))}" qemu-system-x86_64 -m 1024M -smp ${L45_VM_SMP:-2,sockets=2,cores=1} "$@" \
    -nographic -no-reboot -nic none -kernel "$tree/arch/x86/boot/bzImage" -initrd "$work/$name.cpio.gz" \
    -append "console=ttyS0 panic=-1 no_timer_check L45_BENCH=$mode L45_KFUZZ_SECONDS=$kfuzz ${only:+L45_VM_ONLY=$only} ${kargs:-}" < /dev/null > "$work/$name.log" 2>&1
  local qrc=$?
  set -e
  tr -d '\r' < "$work/$name.log" > "$work/$name.txt"
  grep -vE '^RESULT|^BENCH| KFUZZ ' "$work/$name.txt" | sed "s/^/  $name| /" >&2 || true
  grep -q '^VM: done' "$work/$name.txt" || { log "the $name VM did not finish (qemu status $qrc)"; return 1; }
}

finished=1 passed=0 failed=0
if [[ ${L45_TESTS:-1} != 0 ]]; then   # L45_TESTS=0: the benchmark only
  boot test "$ktree" "$work/l45-test.ko" 0 || finished=0
  cp "$work/test.txt" "${L45_VM_LOG:-/tmp/l45-vm-console.log}"   # the whole console, for a failed run
  passed=$(grep -c '^RESULT pass' "$work/test.txt" || true)
  failed=$(grep -c '^RESULT fail' "$work/test.txt" || true)
  grep '^RESULT' "$work/test.txt" >&2 || true
  expected=27
  # L45_VM_ONLY=name,name: only those tests (names as tests.sh's run lines)
  [[ -z $only ]] || expected=$(tr ',' '\n' <<< "$only" | grep -c .)
  (( finished )) || failed=$((failed + 1))
  if (( passed + failed < expected )); then
    log "only $((passed + failed)) of $expected tests reported"; failed=$((failed + expected - passed - failed))
  fi
fi

# L45_KFUZZ_KEEP=1: the fuzzer's new corpus entries join the kept corpus.
if [[ ${L45_KFUZZ_KEEP:-0} == 1 ]]; then
  mkdir -p "$root/fuzz/corpus/kernel_netlink"
  grep -o 'KFUZZ [0-9a-f]*' "$work/test.txt" | while read -r _ hex; do
    f="$root/fuzz/corpus/kernel_netlink/$(printf %s "$hex" | sha1sum | cut -c1-16)"
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$hex" > "$f"
  done
  log "kernel netlink corpus: $(ls "$root/fuzz/corpus/kernel_netlink" | wc -l) entries"
fi
t_vm=$(date +%s)

# Benchmark ratios against the unloaded kernel, on the benchmark kernel.
# Lines "BENCH WORKLOAD CONFIG ROUND ... us=N". Per workload and
# configuration: "best" is the best time over the rounds divided by the
# best unloaded time; "median" and the range are over the rounds of the
# time divided by the same round's unloaded time (rounds interleave the
# configurations, so a round's ratio compares times taken close together).
bench=${L45_KBENCH_OUT:-/tmp/l45-kbench.txt}
if [[ -n $btree ]]; then
  # Guest time from the instruction count (qemu -icount): a slow spell of
  # the host stretches real time, not the guest's, so the figures measure
  # instructions the guest executed (both vCPUs, run in turn), not host
  # load. L45_BENCH_ICOUNT=0 measures real time instead.
  # tsc=reliable: the TSC (counting that guest time) stays the clock
  # source; the kernel would otherwise fall back to 4 ms jiffies.
  icount=(-icount shift=0,sleep=off) kargs="tsc=reliable"
  [[ ${L45_BENCH_ICOUNT:-1} != 0 ]] || icount=() kargs=
  # the workload sizes reach tests.sh through the kernel command line
  kargs+=" L45_BENCH_ROUNDS=${L45_BENCH_ROUNDS:-10} L45_BENCH_QUERIES=${L45_BENCH_QUERIES:-1000}"
  kargs+=" L45_BENCH_BYTES=${L45_BENCH_BYTES:-4000000}"
  if ! boot bench "$btree" "$work/l45-bench.ko" only "${icount[@]}" || ! grep -q '^BENCH' "$work/bench.txt"; then
    log "the benchmark did not complete"; failed=$((failed + 1))
  else
    # (POSIX awk: mawk has no asort)
    awk '/^BENCH/ { split($NF, a, "="); t[$2, $3, $4] = a[2] + 0; w[$2] = 1; r[$4] = 1 }
         function sort(x, n,   i, j, y) {
           for (i = 2; i <= n; i++) { y = x[i]; for (j = i - 1; j >= 1 && x[j] > y; j--) x[j + 1] = x[j]; x[j + 1] = y }
         }
         END {
           split("dns4 dns6 tcp4 tcp6", ws, " "); split("loaded tapped tagged", cs, " ")
           for (i = 1; i <= 4; i++) {
             k = ws[i]; if (!(k in w)) continue
             bu = 0; nr = 0
             for (rr in r) if ((k, "unloaded", rr) in t) { v = t[k, "unloaded", rr]; if (!bu || v < bu) bu = v; nr++ }
             line = sprintf("%s (%d rounds, unloaded best %d us):", k, nr, bu)
             for (j = 1; j <= 3; j++) {
               c = cs[j]; n = 0; b = 0
               for (rr in r) if ((k, c, rr) in t && (k, "unloaded", rr) in t) {
                 v = t[k, c, rr]; if (!b || v < b) b = v
                 q[++n] = v / t[k, "unloaded", rr]
               }
               if (!n) continue
               sort(q, n)
               med = (n % 2) ? q[(n + 1) / 2] : (q[n / 2] + q[n / 2 + 1]) / 2
               line = line sprintf(" %s best=%.3f median=%.3f [%.2f-%.2f]", c, b / bu, med, q[1], q[n])
             }
             print line
           }
         }' "$work/bench.txt" > "$bench"
    grep '^BENCH' "$work/bench.txt" > "$bench.raw" || true
    log "benchmark on the benchmark kernel (time relative to the unloaded kernel; raw lines in $bench.raw):"
    sed 's/^/  /' "$bench" >&2
  fi
fi
t_bench=$(date +%s)
log "timings: kernels $((t_kernel - t0)) s, modules+programs $((t_build - t_kernel)) s, test VM $((t_vm - t_build)) s, benchmark VM $((t_bench - t_vm)) s, total $((t_bench - t0)) s"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
