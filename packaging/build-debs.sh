#!/usr/bin/env bash
# Builds the Debian packages l45-agent, l45-nco (with l45-dissector) and
# l45-tap into DIR (default target/debian) with cargo-deb, installing
# cargo-deb into ~/.cargo/bin first if that version is not there
# (docs/service.md, "Packages"). Prints the paths of the packages.
#
#   packaging/build-debs.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/debian}")

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
fi

# The packages' version is the workspace's (0.1.0 → 0.1.0-1): the newest
# entry of packaging/deb/changelog must name it.
version=$(cargo metadata --no-deps --format-version 1 |
          python3 -c 'import json, sys; print({p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}["l45-agent"])')
logged=$(dpkg-parsechangelog -l packaging/deb/changelog -S Version)
if [ "$logged" != "$version-1" ]; then
  echo "packaging/deb/changelog names $logged; the workspace is at $version: add an entry for $version-1" >&2
  exit 1
fi

cargo build --release --quiet -p l45-agent -p l45-nco -p l45-tap-preload
cargo build --release --quiet -p l45-modules --bin l45-dissector

# Completions and man pages, from the binaries just built, where the
# packages' assets (target/release/cli-assets/…) expect them.
target=$(cargo metadata --no-deps --format-version 1 |
         python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
assets="$target/release/cli-assets"
rm -rf "$assets"
for bin in l45-agent l45-nco l45-dissector; do
  "$target/release/$bin" --generate-cli-assets "$assets/$bin" >/dev/null
done
# Debian policy 12.1: man pages gzip-compressed, -n for reproducible files.
gzip -9n "$assets"/*/man/man1/*.1

mkdir -p "$out"
for crate in l45-agent l45-nco l45-tap-preload; do
  # --strip: the release profile keeps line tables (debug = 1) for
  # backtraces in development; the packages ship stripped binaries.
  cargo deb --no-build --strip --quiet -p "$crate" --output "$out"
done
