#!/usr/bin/env bash
# build.sh CRATE_DIR KDIR OUT_DIR: builds the kind crate in CRATE_DIR (its
# src/ tree, Cargo.toml's package name minus a "l45-kind-" prefix is the
# kind's name) into OUT_DIR/l45_kind_<name>.ko for the kernel tree KDIR
# (built by kmod/build-kernel.sh); prints the module's path. The same build
# as the NCO's images::kernel_build (nco-client/src/images/kernel_build.rs).
# BINDGEN defaults to the kernel cache's bindgen, as kmod/vm-test.sh does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
crate=$(cd "$1" && pwd) kdir=$2 out=$3
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)
name=${name#l45-kind-}
[[ $name =~ ^[a-z][a-z0-9-]{0,63}$ ]] || { echo "build.sh: kind name '$name' is not [a-z][a-z0-9-]*" >&2; exit 1; }
module=l45_kind_${name//-/_}
mkdir -p "$out"
b=$(mktemp -d "${TMPDIR:-/tmp}/l45-kind.XXXXXX")
trap 'rm -rf "$b"' EXIT
cp "$here/Kbuild" "$b/Kbuild"
mkdir -p "$b/l45_modules" "$b/kind"
cp "$root"/modules/src/*.rs "$b/l45_modules/"
cp -r "$crate/src/." "$b/kind/"
sdk=
if grep -q 'l45-kind-sdk' "$crate/Cargo.toml" && [[ -f $root/modules/sdk/src/lib.rs ]]; then
  mkdir -p "$b/l45_kind_sdk"; cp -r "$root/modules/sdk/src/." "$b/l45_kind_sdk/"
  sdk='extern crate self as l45_kind_sdk;\n#[allow(dead_code, unused_attributes, unreachable_pub, missing_docs, clippy::all)]\n#[path = "l45_kind_sdk/lib.rs"]\nmod sdk;\n#[allow(unused_imports)]\npub use sdk::*;'
fi
sed -e "s|@KIND@|$name|g" -e "s|@MODULE@|$module|g" -e "s|// @SDK@|$sdk|" "$here/l45_kind.rs" > "$b/$module.rs"
# l45.ko's exports (kmod/kinds.c). Kernels with Rust have MODVERSIONS off,
# so a CRC of 0 is what l45.ko's own Module.symvers holds.
printf '0x00000000\tl45_register_kind\tl45\tEXPORT_SYMBOL_GPL\t\n0x00000000\tl45_unregister_kind\tl45\tEXPORT_SYMBOL_GPL\t\n' > "$b/l45.symvers"
bindgen=${BINDGEN:-${L45_KERNEL_CACHE:-$HOME/.cache/l45-kernel}/tools/bin/bindgen}
make -s -C "$kdir" M="$b" RUSTC=/usr/bin/rustc BINDGEN="$bindgen" LIBCLANG_PATH=/usr/lib/llvm-19/lib \
  L45_KIND_MODULE="$module" KBUILD_EXTRA_SYMBOLS="$b/l45.symvers" modules >&2
cp "$b/$module.ko" "$out/$module.ko"
echo "$out/$module.ko"
