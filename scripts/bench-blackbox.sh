#!/usr/bin/env bash
# tenantwatch side by side with Prometheus blackbox_exporter (docs/benchmarks.md).
#
# Usage:
#   scripts/bench-blackbox.sh [--runs N] [tw-bench flags...]
#
# 1. Installs the Debian package prometheus-blackbox-exporter if it is missing, without
#    letting the package start its own service (which would listen on every interface).
# 2. Builds tenantwatch and tw-bench in release mode (one cargo build, the usual target dir).
# 3. Runs `tw-bench --blackbox /usr/bin/prometheus-blackbox-exporter` N times (default 3):
#    each run starts the simulators, tenantwatch and a private blackbox_exporter on
#    127.0.0.1, drives blackbox with a paced scraper loop at the same probe rate as
#    tenantwatch, concurrently, and measures both from /proc.
#
# Default tw-bench flags: --tenants 4000 --interval 2m --duration 3m (66.7 probes/s, the rate
# of 10,000 tenants x 2 checks at 5 minutes), labels blackbox-4k-2m-runN. Extra flags are
# passed to tw-bench and replace these. Results go to docs/bench-results/ unless --out-dir
# is given.
# Needs root for apt-get (only when the package is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'bench-blackbox: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

runs=3
if [ "${1:-}" = "--runs" ]; then
  [ $# -ge 2 ] || die "--runs needs a number"
  runs=$2
  shift 2
fi

BLACKBOX=/usr/bin/prometheus-blackbox-exporter

install_blackbox() {
  if [ -x "$BLACKBOX" ] \
     && dpkg-query -W -f='${Status}' prometheus-blackbox-exporter 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "prometheus-blackbox-exporter is missing and installing it needs root"
  log "installing the prometheus-blackbox-exporter package"
  export DEBIAN_FRONTEND=noninteractive
  # Deny service starts during the install (unless a policy-rc.d is already there): the
  # packaged service would listen on :9115 on every interface. We run our own instance.
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local rc=0
  local apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get install "${apt_opts[@]}" prometheus-blackbox-exporter >&2; then
    log "install failed; running apt-get update once and retrying"
    if apt-get update -q >&2; then
      apt-get install "${apt_opts[@]}" prometheus-blackbox-exporter >&2 || rc=$?
    else
      rc=1
    fi
  fi
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  [ "$rc" -eq 0 ] || die "could not install prometheus-blackbox-exporter"
  [ -x "$BLACKBOX" ] || die "$BLACKBOX not found after the install"
}

install_blackbox
"$BLACKBOX" --version 2>&1 | head -n 1 >&2 || true

if [ "${TW_BENCH_NO_BUILD:-}" != 1 ]; then
  cargo build --release --locked -p tenantwatch -p tw-bench >&2
fi

# The defaults, each dropped when the caller gives that flag (clap refuses a flag twice).
given() {
  local flag=$1 arg
  for arg in "${extra[@]}"; do
    case "$arg" in "$flag"|"$flag"=*) return 0 ;; esac
  done
  return 1
}
extra=("$@")

for i in $(seq 1 "$runs"); do
  log "run $i of $runs"
  args=()
  given --tenants || args+=(--tenants 4000)
  given --interval || args+=(--interval 2m)
  given --duration || args+=(--duration 3m)
  given --blackbox || args+=(--blackbox "$BLACKBOX")
  given --label || args+=(--label "blackbox-4k-2m-run$i")
  given --out-dir || args+=(--out-dir docs/bench-results)
  target/release/tw-bench "${args[@]}" "$@"
done
