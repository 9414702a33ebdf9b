#!/usr/bin/env bash
# The project's test command: everything the tests need, then the whole suite.
#
# 1. A real Postfix on a loopback port, for the end-to-end test against a real MTA
#    (installed from Debian if missing; a private instance, the system's is left alone).
# 2. cargo test --workspace. Every test talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v python3 >/dev/null || { echo "test.sh: python3 is needed (a test holds a SQLite lock from a second process)" >&2; exit 1; }

postfix_dir="$PWD/target/tw-postfix"
eval "$(scripts/postfix-test-instance.sh start "$postfix_dir")"
export TW_POSTFIX_ADDR TW_POSTFIX_DIR="$postfix_dir"
trap 'scripts/postfix-test-instance.sh stop "$postfix_dir" || true' EXIT

cargo test --workspace --locked "$@"
