#!/usr/bin/env bash
# The project's test command: everything the tests need, then the whole suite.
#
# 1. A real Postfix on a loopback port, for the end-to-end test against a real MTA
#    (installed from Debian if missing; a private instance, the system's is left alone).
# 2. A real Dovecot on a loopback port, the bounce mailbox of the mailflow tests (installed
#    from Debian if missing; a private, unprivileged instance).
# 3. promtool, shellcheck and cargo-deb for the observability and package tests.
# 4. cargo test --workspace. Every test talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A test holds a SQLite lock from a second process (Python's sqlite3); another checks the
# systemd unit with systemd-analyze. Both are on Debian by default; install them if not.
# The status page test renders the page in headless Chromium (Debian package `chromium`).
# The observability tests run promtool (Debian package `prometheus`) over a live scrape, the
# rules and the dashboard's queries; the package test runs shellcheck on the maintainer scripts.
need=()
command -v python3 >/dev/null || need+=(python3)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
command -v shellcheck >/dev/null || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2; }
fi

# The package test builds the .deb with cargo-deb (pinned, installed into target/tools).
scripts/build-deb.sh --tool-only >/dev/null

postfix_dir="$PWD/target/tw-postfix"
eval "$(scripts/postfix-test-instance.sh start "$postfix_dir")"
export TW_POSTFIX_ADDR TW_POSTFIX_DIR="$postfix_dir"
trap 'scripts/postfix-test-instance.sh stop "$postfix_dir" || true' EXIT

dovecot_dir="$PWD/target/tw-dovecot"
eval "$(scripts/dovecot-test-instance.sh start "$dovecot_dir")"
export TW_DOVECOT_ADDR TW_DOVECOT_MAILDIR TW_DOVECOT_USER TW_DOVECOT_PASSWORD_FILE TW_DOVECOT_CA \
  TW_DOVECOT_STARTTLS_ADDR
# Set by this script only: the mailflow tests fail instead of skipping without Dovecot, and
# the status page test fails instead of skipping without Chromium.
export TW_REQUIRE_DOVECOT=1
export TW_REQUIRE_CHROMIUM=1
# … and the observability and package tests fail instead of skipping without promtool,
# cargo-deb, shellcheck or root (for dpkg --root).
export TW_REQUIRE_PROMTOOL=1 TW_REQUIRE_DEB_TOOLS=1
trap 'scripts/postfix-test-instance.sh stop "$postfix_dir" || true; scripts/dovecot-test-instance.sh stop "$dovecot_dir" || true' EXIT

cargo test --workspace --locked "$@"
