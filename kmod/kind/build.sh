#!/usr/bin/env bash
# build.sh CRATE_DIR KDIR OUT_DIR: builds the kind crate in CRATE_DIR into
# OUT_DIR/l45_kind_<name>.ko for the kernel tree KDIR (built by
# kmod/build-kernel.sh) and prints the module's path. The kind's name is
# Cargo.toml's package name without a "l45-kind-" prefix. The same build as
# the NCO's images::kernel_build (nco-client/src/images/kernel_build.rs):
#  - kind.rs: the kind's src/lib.rs with tail.rs appended (and tail-sdk.rs
#    when it uses the SDK: l45-kind-sdk = { path = "..." }); a crate-level
#    forbid(...) becomes deny(...), as the ABI and the SDK allow unsafe
#    code inside the one crate;
#  - l45_modules/: modules/src, its crate:: paths made crate::l45_modules::;
#  - l45_kind_sdk/: the SDK's src, its l45_modules paths made
#    crate::l45_modules, its $crate:: paths $crate::l45_kind_sdk::, and its
#    exported macros re-exported from it;
#  - glue.c: module init/exit registering the table with l45.ko.
# BINDGEN defaults to the kernel cache's bindgen, as kmod/vm-test.sh does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
crate=$(cd "$1" && pwd) kdir=$2 out=$3
name=$(sed -n '/^\[package\]/,/^\[/s/^name *= *"\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)
name=${name#l45-kind-}
[[ $name =~ ^[a-z][a-z0-9-]{0,63}$ ]] || { echo "build.sh: kind name '$name' is not [a-z][a-z0-9-]*" >&2; exit 1; }
[[ -f $crate/src/lib.rs ]] || { echo "build.sh: $crate has no src/lib.rs" >&2; exit 1; }
module=l45_kind_${name//-/_}
mkdir -p "$out"
b=$(mktemp -d "${TMPDIR:-/tmp}/l45-kind.XXXXXX")
trap 'rm -rf "$b"' EXIT
cp "$here/Kbuild" "$b/Kbuild"
sed -e "s|@KIND@|$name|g" -e "s|@MODULE@|$module|g" "$here/glue.c" > "$b/glue.c"
mkdir -p "$b/l45_modules"
for f in "$root"/modules/src/*.rs; do
  sed -E 's/(^|[^$[:alnum:]_])crate::/\1crate::l45_modules::/g' "$f" > "$b/l45_modules/$(basename "$f")"
done
sed -E 's/^(#!\[)forbid\(/\1deny(/' "$crate/src/lib.rs" > "$b/kind.rs"
cat "$here/tail.rs" >> "$b/kind.rs"
sdk_path=$(sed -n 's/^l45-kind-sdk *=.*path *= *"\([^"]*\)".*/\1/p' "$crate/Cargo.toml" | head -1)
if grep -q '^l45-kind-sdk' "$crate/Cargo.toml"; then
  sdk=$crate/$sdk_path/src
  [[ -n $sdk_path && -f $sdk/lib.rs ]] || { echo "build.sh: the kind uses l45-kind-sdk but names no path to it" >&2; exit 1; }
  mkdir -p "$b/l45_kind_sdk"
  for f in "$sdk"/*.rs; do
    sed -E -e 's/(^|[^:[:alnum:]_])l45_modules/\1crate::l45_modules/g' -e 's/\$crate::/$crate::l45_kind_sdk::/g' \
      "$f" > "$b/l45_kind_sdk/$(basename "$f")"
  done
  macros=$(sed -n 's/^macro_rules! *\([a-z_0-9]*\).*/\1/p' "$sdk/lib.rs" | paste -sd, -)
  [[ -z $macros ]] || printf '\n#[allow(unused_imports)]\npub use crate::{%s};\n' "$macros" >> "$b/l45_kind_sdk/lib.rs"
  cat "$here/tail-sdk.rs" >> "$b/kind.rs"
fi
# l45.ko's exports (kmod/kinds.c). Kernels with Rust have MODVERSIONS off,
# so a CRC of 0 is what l45.ko's own Module.symvers holds.
printf '0x00000000\tl45_register_kind\tl45\tEXPORT_SYMBOL_GPL\t\n0x00000000\tl45_unregister_kind\tl45\tEXPORT_SYMBOL_GPL\t\n' > "$b/l45.symvers"
bindgen=${BINDGEN:-${L45_KERNEL_CACHE:-$HOME/.cache/l45-kernel}/tools/bin/bindgen}
make -s -C "$kdir" M="$b" RUSTC=/usr/bin/rustc BINDGEN="$bindgen" LIBCLANG_PATH=/usr/lib/llvm-19/lib \
  L45_KIND_MODULE="$module" KBUILD_EXTRA_SYMBOLS="$b/l45.symvers" modules >&2
cp "$b/$module.ko" "$out/$module.ko"
echo "$out/$module.ko"
