#!/usr/bin/env bash
# Installs the build dependencies and builds (or reuses) a VM kernel:
#   build-kernel.sh [CONFIG]   CONFIG: kmod/kernel.config (default; the test kernel, with
#                              lockdep and KCOV) or kmod/kernel-bench.config (no debug checks)
# Prints the path of the kernel tree on stdout (last line). Logs go to stderr.
#
# Cache: ~/.cache/l45-kernel/<key>/ where key = kernel package version + rustc version +
# bindgen version + sha256 of the config. A tree is built in-tree (relocatable) in a
# temporary directory and renamed into place only when complete; its KEY file is verified on
# reuse, so an interrupted or concurrent build never yields a half-built cache entry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
config=$(realpath -- "${1:-$here/kernel.config}")
[[ -f $config ]] || { echo "[kernel] no config $config" >&2; exit 1; }
cache=${L45_KERNEL_CACHE:-$HOME/.cache/l45-kernel}
KPKG=linux-source-6.12
BINDGEN_VER=0.70.1
log() { echo "[kernel] $*" >&2; }

need_pkgs=(linux-source-6.12 rustc-web rust-web-src libstd-rust-web-dev clang-19 libclang-19-dev
  llvm-19 lld-19 bc bison flex libelf-dev libssl-dev cpio kmod xz-utils busybox-static
  bind9-dnsutils dnsmasq-base)
missing=()
for p in "${need_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v qemu-system-x86_64 >/dev/null; then missing+=(qemu); fi
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  if [[ ! -e /etc/apt/sources.list.d/bookworm-backports.sources ]]; then
    cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -q >&2
  pk=(); for p in "${missing[@]}"; do [[ $p != qemu ]] && pk+=("$p"); done
  ((${#pk[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pk[@]}" >&2
  command -v qemu-system-x86_64 >/dev/null || DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >&2
fi

mkdir -p "$cache/tools"
# Builds interrupted hours ago (killed runs) leave their temporary trees.
find "$cache" -maxdepth 1 -name '.build-*' -mmin +240 -exec rm -rf {} + 2>/dev/null || true
BINDGEN=$cache/tools/bin/bindgen
if ! "$BINDGEN" --version 2>/dev/null | grep -q "$BINDGEN_VER"; then
  log "cargo install bindgen-cli@$BINDGEN_VER"
  LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install --locked "bindgen-cli@$BINDGEN_VER" \
    --root "$cache/tools" >&2
fi

kver=$(dpkg-query -W -f '${Version}' $KPKG)
rver=$(/usr/bin/rustc --version | awk '{print $2}')
chash=$(grep -v '^#' "$config" | sha256sum | cut -c1-16)
key="linux-$kver-rustc-$rver-bindgen-$BINDGEN_VER-cfg-$chash"
key=${key//[^A-Za-z0-9._-]/_}
dir=$cache/$key
if [[ -f $dir/KEY && $(cat "$dir/KEY") == "$key" && -f $dir/linux/arch/x86/boot/bzImage \
      && -f $dir/linux/Module.symvers ]]; then
  log "cache hit: $dir"
  echo "$dir/linux"; exit 0
fi
[[ -e $dir ]] && { log "discarding incomplete cache entry $dir"; rm -rf "$dir"; }

tmp=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building kernel $key in $tmp (about 8 minutes on 2 cores)"
mkdir "$tmp/linux"
tar xf /usr/src/$KPKG.tar.xz -C "$tmp/linux" --strip-components=1
cd "$tmp/linux"
mk() { make RUSTC=/usr/bin/rustc BINDGEN="$BINDGEN" LIBCLANG_PATH=/usr/lib/llvm-19/lib "$@"; }
mk tinyconfig >&2
opts=$(grep -v '^#' "$config")
args=(); for o in $opts; do args+=(-e "$o"); done
scripts/config "${args[@]}" -d MODVERSIONS -d DEBUG_INFO_BTF
mk olddefconfig >&2
# The options the tests or the benchmark rely on: set when the config asks
# for them (olddefconfig drops what lacks a dependency), absent when not
# (the benchmark kernel must not carry the debug checks).
for o in RUST CRYPTO_GCM MODULES PROVE_LOCKING KCOV DEBUG_ATOMIC_SLEEP; do
  if grep -v '^#' "$config" | grep -qw "$o"; then
    grep -q "^CONFIG_$o=y" .config || { log "CONFIG_$o is not set after olddefconfig"; exit 1; }
  else
    ! grep -q "^CONFIG_$o=y" .config || { log "CONFIG_$o is set but $config does not ask for it"; exit 1; }
  fi
done
mk rustavailable >&2
mk -j"$(nproc)" >&2
echo "$key" > "$tmp/KEY"
mv -T "$tmp" "$dir" 2>/dev/null || { [[ -f $dir/KEY ]] && log "another run won the race"; }
trap - EXIT
rm -rf "$tmp"
echo "$dir/linux"
