#!/usr/bin/env bash
# Kernel-tap tests in a VM: builds (or reuses) the kernel, builds the module,
# the release agent and l45-ktest, packs an initramfs with busybox, dig,
# dnsmasq, ssh and their libraries, boots it under qemu (TCG) and runs
# kmod/vm/tests.sh there. Prints exactly one "N passed, N failed" line at the
# end (exit status non-zero if any failed). Benchmark ratios are written to
# $L45_KBENCH_OUT (default /tmp/l45-kbench.txt); L45_BENCH=0 skips them.
# L45_KFUZZ_SECONDS (default 60) is how long the netlink fuzzer runs;
# L45_KFUZZ_KEEP=1 adds its new inputs to fuzz/corpus/kernel_netlink.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
t0=$(date +%s)
log() { echo "[vm-test] $*" >&2; }

ktree=$("$here/build-kernel.sh" | tail -1)
[[ -f $ktree/arch/x86/boot/bzImage ]] || { log "no kernel"; echo "0 passed, 1 failed"; exit 1; }
t_kernel=$(date +%s)
bindgen=${L45_KERNEL_CACHE:-$HOME/.cache/l45-kernel}/tools/bin/bindgen
make -s -C "$here" KDIR="$ktree" BINDGEN="$bindgen" >&2
(cd "$root" && cargo build --release -q -p l45-agent -p l45-ktest >&2)
t_build=$(date +%s)

work=$(mktemp -d /tmp/l45-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
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
copy_bin "$root/target/release/l45-agent" /bin/l45-agent
copy_bin "$root/target/release/l45-ktest" /bin/l45-ktest
copy_bin "$(command -v dig)" /usr/bin/dig
copy_bin "$(command -v dnsmasq)" /usr/bin/dnsmasq
copy_bin "$(command -v ssh)" /usr/bin/ssh
cp "$here/l45.ko" "$ir/l45.ko"
mkdir -p "$ir/kfuzz"; cp "$root"/fuzz/corpus/kernel_netlink/* "$ir/kfuzz/" 2>/dev/null || true
cp "$here/vm/init" "$ir/init"; cp "${L45_VM_TESTS:-$here/vm/tests.sh}" "$ir/tests.sh"; chmod +x "$ir/init"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ir/etc/group"
printf 'nameserver 127.0.0.1\n' > "$ir/etc/resolv.conf"
printf 'passwd: files\ngroup: files\nhosts: files\n' > "$ir/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$ir/etc/hosts"
ssh-keygen -q -t ed25519 -N '' -f "$ir/root/key"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initramfs.cpio.gz"

log "booting the VM (TCG)"
out=$work/console.log
set +e
kfuzz=${L45_KFUZZ_SECONDS:-60}
timeout "${L45_VM_TIMEOUT:-$((900 + kfuzz))}" qemu-system-x86_64 -m 1024M -smp ${L45_VM_SMP:-2,sockets=2,cores=1} -nographic -no-reboot -nic none \
  -kernel "$ktree/arch/x86/boot/bzImage" -initrd "$work/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 L45_BENCH=${L45_BENCH:-1} L45_KFUZZ_SECONDS=$kfuzz" < /dev/null > "$out" 2>&1
qrc=$?
set -e
t_vm=$(date +%s)
tr -d '\r' < "$out" > "$out.txt"
cp "$out.txt" "${L45_VM_LOG:-/tmp/l45-vm-console.log}"   # the whole console, for a failed run
grep -vE '^RESULT|^BENCH| KFUZZ ' "$out.txt" | sed 's/^/  vm| /' >&2 || true
passed=$(grep -c '^RESULT pass' "$out.txt" || true)
failed=$(grep -c '^RESULT fail' "$out.txt" || true)
grep '^RESULT' "$out.txt" >&2 || true
expected=16
if ! grep -q '^VM: done' "$out.txt"; then
  log "the VM did not finish (qemu status $qrc)"; failed=$((failed + 1))
fi
if (( passed + failed < expected )); then
  log "only $((passed + failed)) of $expected tests reported"; failed=$((failed + expected - passed - failed))
fi

# Benchmark ratios (best of three rounds) against the unloaded kernel.
# L45_KFUZZ_KEEP=1: the fuzzer's new corpus entries join the kept corpus.
if [[ ${L45_KFUZZ_KEEP:-0} == 1 ]]; then
  mkdir -p "$root/fuzz/corpus/kernel_netlink"
  grep -o 'KFUZZ [0-9a-f]*' "$out.txt" | while read -r _ hex; do
    f="$root/fuzz/corpus/kernel_netlink/$(printf %s "$hex" | sha1sum | cut -c1-16)"
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$hex" > "$f"
  done
  log "kernel netlink corpus: $(ls "$root/fuzz/corpus/kernel_netlink" | wc -l) entries"
fi

bench=${L45_KBENCH_OUT:-/tmp/l45-kbench.txt}
if grep -q '^BENCH' "$out.txt"; then
  # (POSIX awk: mawk has no asort)
  awk '/^BENCH/ { split($NF, a, "="); k = $2 " " $3; n[k]++; v[k, n[k]] = a[2] + 0 }
       function best(k,   i, b) {
         b = v[k, 1]; for (i = 2; i <= n[k]; i++) if (v[k, i] < b) b = v[k, i]
         return b
       }
       END {
         split("dns tcp", ks, " "); split("unloaded loaded tapped tagged", cs, " ")
         for (i = 1; i <= 2; i++) {
           k = ks[i]; if (!((k " unloaded") in n)) continue
           base = best(k " unloaded"); line = k ":"
           for (j = 1; j <= 4; j++) if ((k " " cs[j]) in n) line = line sprintf(" %s=%.2f", cs[j], best(k " " cs[j]) / base)
           print line sprintf(" (unloaded best %d us)", base)
         }
       }' "$out.txt" > "$bench"
  log "benchmark (time relative to the unloaded kernel, best of 3 rounds):"; sed 's/^/  /' "$bench" >&2
fi
log "timings: kernel $((t_kernel - t0)) s, module+programs $((t_build - t_kernel)) s, VM $((t_vm - t_build)) s, total $((t_vm - t0)) s"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
