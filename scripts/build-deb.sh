#!/usr/bin/env bash
# Builds the Debian package target/debian/tenantwatch_<version>-1_<arch>.deb with cargo-deb
# (metadata: [package.metadata.deb] in crates/tenantwatch/Cargo.toml; docs/install.md).
#
#   scripts/build-deb.sh [cargo-deb options…]   release build, then the package
#   scripts/build-deb.sh --tool-only            only make sure cargo-deb is there; prints its path
#
# cargo-deb is pinned and installed into target/tools (project-local, nothing system-wide)
# the first time, from crates.io with its own lock file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo_deb_version=3.8.0
tools="$PWD/target/tools"
cargo_deb="$tools/bin/cargo-deb"

if [ "$("$cargo_deb" --version 2>/dev/null || true)" != "cargo-deb $cargo_deb_version" ]; then
  echo "build-deb.sh: installing cargo-deb $cargo_deb_version into $tools" >&2
  cargo install cargo-deb --version "=$cargo_deb_version" --locked --root "$tools" >&2
fi

if [ "${1:-}" = --tool-only ]; then
  echo "$cargo_deb"
  exit 0
fi

# --strip: the release profile keeps line tables for backtraces; the package does not need
# them (a fifth of the size).
exec "$cargo_deb" -p tenantwatch --locked --strip "$@"
