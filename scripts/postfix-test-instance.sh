#!/usr/bin/env bash
# Start (or stop) a throw-away, loopback-only Postfix instance for end-to-end
# tests of the SMTP RCPT probe.
#
# Usage:
#   scripts/postfix-test-instance.sh [start] [DIR]   # default mode: start
#   scripts/postfix-test-instance.sh stop [DIR]
#
# DIR defaults to <repo>/target/tw-postfix. Must run as root (Postfix's master
# and its safety checks require it).
#
# start: installs the Debian "postfix" package if missing (without configuring
#   or starting the system's default instance), stops an instance left over
#   in DIR by a previous run, writes a fresh instance (config/, data/, log/,
#   queue/ under DIR; see below for queue/ and data/), starts it on 127.0.0.1:<free port>, waits for the
#   220 greeting and prints exactly one line on stdout:
#       TW_POSTFIX_ADDR=127.0.0.1:<port>
#   The same line is written to DIR/env. Everything else goes to stderr.
#   Postfix's own log is DIR/log/maillog.
#
# stop: stops the instance in DIR if it is running (idempotent).
#
# The instance: no TLS, IPv4 only, no DNS, in_flow_delay = 0, relays only for
# postfix-test.example, and only to the recipients alice@, bob@ and tempfail@
# (tempfail@ is answered "450 4.2.1 ..."); everything else in that domain is
# "550 5.1.1 ... User unknown in relay recipient table", other domains are
# "554 5.7.1 ... Relay access denied". Mail that does get accepted (the probe
# never sends DATA) is discarded: all transports are discard:.
#
# Queue/data directories: they go in DIR/queue and DIR/data only if DIR and
# every directory above it is root-owned, not group/world writable and
# world-searchable (Postfix daemons running as the postfix user must reach
# them, e.g. master opens data/master.lock as postfix; and a root-run daemon
# should not work in a tree another user can swap out). Otherwise, e.g. a
# repo checked out by a normal user, or under /root or /tmp, they go in
# /var/spool/tw-postfix-<hash of DIR>/ instead (reported on stderr); config/,
# log/ and env stay in DIR. Requires bash, python3 (or ss) and root.
set -euo pipefail

log() { printf 'postfix-test-instance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

MODE=start
case "${1:-}" in
  start|stop) MODE=$1; shift ;;
  -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 0 ;;
esac
[ $# -le 1 ] || die "usage: $0 [start|stop] [DIR]"

DIR=${1:-$REPO/target/tw-postfix}
case "$DIR" in /*) ;; *) DIR=$PWD/$DIR ;; esac
DIR=${DIR%/}

CONF=$DIR/config
LOGDIR=$DIR/log

[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---------------------------------------------------------------------------
# helpers

# Postfix's queue directory (and its parents) must not be replaceable by
# anyone but root, and the postfix user must be able to reach the queue and
# data directories (master opens data_directory/master.lock as that user,
# the daemons chdir into the queue). So DIR can hold them only if DIR and
# every existing directory above it is root-owned, not group/world writable
# and world-searchable. Components that don't exist yet are created by us
# (root, 0755).
path_ok_for_runtime() {
  local p=$1 owner perm
  while :; do
    if [ -e "$p" ]; then
      [ -d "$p" ] && [ ! -L "$p" ] || return 1
      owner=$(stat -c %u "$p")
      perm=$(stat -c %a "$p")
      [ "$owner" = 0 ] || return 1
      (( (8#$perm & 8#022) == 0 )) || return 1
      (( (8#$perm & 8#001) != 0 )) || return 1
    fi
    [ "$p" = / ] && return 0
    p=$(dirname "$p")
  done
}

# Where queue/ and data/ go: DIR itself if it qualifies, else a root-owned
# directory in /var/spool named after a hash of DIR.
runtime_base_for() {
  if path_ok_for_runtime "$DIR"; then
    printf '%s\n' "$DIR"
  else
    local h
    h=$(printf '%s' "$DIR" | sha256sum | cut -c1-12)
    printf '%s\n' "/var/spool/tw-postfix-$h"
  fi
}

is_running() {  # is the instance whose config is in $CONF running?
  [ -f "$CONF/main.cf" ] || return 1
  postfix -c "$CONF" status >/dev/null 2>&1
}

stop_instance() {
  if [ ! -f "$CONF/main.cf" ]; then
    log "no instance configured in $DIR; nothing to stop"
    return 0
  fi
  if ! command -v postfix >/dev/null 2>&1; then
    log "postfix is not installed; nothing to stop"
    return 0
  fi
  if is_running; then
    log "stopping instance in $DIR"
    postfix -c "$CONF" stop >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      is_running || break
      sleep 0.1
    done
    if is_running; then
      # Last resort: kill the master by the pid it wrote.
      local q pid
      q=$(postconf -c "$CONF" -h queue_directory)
      pid=$(awk '{print $1; exit}' "$q/pid/master.pid" 2>/dev/null || true)
      if [ -n "$pid" ]; then
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
      fi
      sleep 0.5
    fi
    is_running && die "could not stop the instance in $DIR"
    log "stopped"
  else
    log "instance in $DIR is not running"
  fi
  return 0
}

install_postfix() {
  if [ -x /usr/sbin/postfix ] && [ -x /usr/lib/postfix/sbin/master ] \
     && dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  log "installing the postfix package"
  export DEBIAN_FRONTEND=noninteractive
  # Don't let the package configure a default instance or ask questions.
  debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string mx.postfix-test.example
EOF
  # Don't let the package start the default instance (if some other
  # configuration makes it startable): deny service starts during install
  # unless a policy-rc.d is already there.
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local rc=0
  local apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get install "${apt_opts[@]}" postfix >&2; then
    log "install failed; running apt-get update once and retrying"
    if apt-get update -q >&2; then
      apt-get install "${apt_opts[@]}" postfix >&2 || rc=$?
    else
      rc=1
    fi
  fi
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  [ "$rc" -eq 0 ] || die "could not install postfix"
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
  else
    local p
    for _ in $(seq 1 50); do
      p=$(( 20000 + RANDOM % 40000 ))
      if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
        echo "$p"; return 0
      fi
    done
    return 1
  fi
}

# Wait until 127.0.0.1:$1 answers with a 220 greeting (timeout $2 seconds).
wait_greeting() {
  local port=$1 timeout=$2 deadline line
  deadline=$(( $(date +%s) + timeout ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    # (the braces keep the 2>/dev/null from sticking to the shell)
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
      line=
      IFS= read -r -t 5 line <&3 || true
      printf 'QUIT\r\n' >&3 2>/dev/null || true
      exec 3<&- 3>&- || true
      line=${line%$'\r'}
      if [[ $line == "220 "* ]]; then
        log "greeting: $line"
        return 0
      fi
      [ -n "$line" ] && log "unexpected greeting: $line"
    fi
    sleep 0.2
  done
  return 1
}

# Postfix programs refuse to read a main.cf/master.cf modified within the
# last second or so: they re-read it every 0.3 s until its mtime is old
# enough (protection against half-written files), which costs ~2 s per
# command right after an edit. Our files are complete, so backdate them.
backdate_config() {
  touch -d "@$(( $(date +%s) - 60 ))" "$CONF/main.cf" "$CONF/master.cf"
}

# ---------------------------------------------------------------------------

if [ "$MODE" = stop ]; then
  stop_instance
  exit 0
fi

install_postfix

# A leftover instance from a previous run: stop it, then rebuild from scratch.
stop_instance

RUNBASE=$(runtime_base_for)
QUEUE=$RUNBASE/queue
DATA=$RUNBASE/data
if [ "$RUNBASE" != "$DIR" ]; then
  log "note: $DIR or a directory above it is not root-owned, is group/world"
  log "      writable or is not world-searchable, which is unsafe or unusable"
  log "      for Postfix's queue and data directories; they go in $RUNBASE"
fi

umask 022
rm -rf "$CONF" "$DATA" "$LOGDIR" "$QUEUE" "$DIR/env"
mkdir -p "$DIR" "$CONF" "$LOGDIR" "$RUNBASE" "$DATA" "$QUEUE"
chown root:root "$CONF" "$QUEUE" "$LOGDIR" "$RUNBASE"
chmod 755 "$CONF" "$QUEUE" "$LOGDIR" "$RUNBASE"
chown postfix:postfix "$DATA"
chmod 700 "$DATA"

cp /usr/share/postfix/master.cf.dist "$CONF/master.cf"
# A minimal main.cf; everything else is set with postconf below.
cat > "$CONF/main.cf" <<EOF
# Generated by scripts/postfix-test-instance.sh; rewritten on every start.
compatibility_level = 3.6
EOF

cat > "$CONF/relay_recipients" <<'EOF'
alice@postfix-test.example OK
bob@postfix-test.example OK
tempfail@postfix-test.example OK
EOF
cat > "$CONF/recipient_access" <<'EOF'
tempfail@postfix-test.example 450 4.2.1 Mailbox temporarily unavailable
EOF

postconf -c "$CONF" -e \
  "queue_directory = $QUEUE" \
  "data_directory = $DATA" \
  "maillog_file = $LOGDIR/maillog" \
  "maillog_file_prefixes = $LOGDIR" \
  "syslog_name = tw-postfix" \
  "myhostname = mx.postfix-test.example" \
  "mydomain = postfix-test.example" \
  "myorigin = \$myhostname" \
  "mydestination =" \
  "mynetworks = 127.0.0.0/8" \
  "inet_interfaces = 127.0.0.1" \
  "inet_protocols = ipv4" \
  "in_flow_delay = 0" \
  "relay_domains = postfix-test.example" \
  "relay_recipient_maps = hash:$CONF/relay_recipients" \
  "smtpd_relay_restrictions = reject_unauth_destination" \
  "smtpd_recipient_restrictions = check_recipient_access hash:$CONF/recipient_access, reject_unauth_destination" \
  "smtpd_banner = \$myhostname ESMTP" \
  "smtpd_helo_required = no" \
  "smtpd_tls_security_level = none" \
  "smtp_tls_security_level = none" \
  "smtpd_peername_lookup = no" \
  "smtp_dns_support_level = disabled" \
  "lmtp_dns_support_level = disabled" \
  "smtp_host_lookup = native" \
  "alias_maps =" \
  "alias_database =" \
  "biff = no" \
  "append_dot_mydomain = no" \
  "default_transport = discard:tw-postfix test instance" \
  "relay_transport = discard:tw-postfix test instance" \
  "local_transport = discard:tw-postfix test instance" \
  "virtual_transport = discard:tw-postfix test instance" \
  "notify_classes =" \
  "mailbox_size_limit = 0"

# Services: Debian's default master.cf, minus the public port-25 listener,
# plus our loopback listener. No chroot: the Debian init script that would
# populate a chroot jail is not used for this instance.
postconf -c "$CONF" -MX smtp/inet
postconf -c "$CONF" -F '*/*/chroot = n'

backdate_config
postmap -c "$CONF" "hash:$CONF/relay_recipients" "hash:$CONF/recipient_access"

started=
for attempt in 1 2 3; do
  PORT=$(free_port) || die "could not find a free port"
  for svc in $(postconf -c "$CONF" -M 2>/dev/null | awk '$1 ~ /^127\.0\.0\.1:/ && $2 == "inet" {print $1"/inet"}'); do
    postconf -c "$CONF" -MX "$svc"
  done
  postconf -c "$CONF" -M "127.0.0.1:$PORT/inet = 127.0.0.1:$PORT inet n - n - - smtpd"
  backdate_config

  log "starting instance in $DIR on 127.0.0.1:$PORT (config $CONF, queue $QUEUE)"
  loglines=0
  [ -f "$LOGDIR/maillog" ] && loglines=$(wc -l < "$LOGDIR/maillog")
  if postfix -c "$CONF" start >&2 2>&1; then
    if wait_greeting "$PORT" 20; then
      started=1
      break
    fi
    log "no 220 greeting on 127.0.0.1:$PORT within 20s"
    postfix -c "$CONF" stop >/dev/null 2>&1 || true
  else
    log "postfix start failed (attempt $attempt); see $LOGDIR/maillog"
  fi
  tail -n +"$((loglines + 1))" "$LOGDIR/maillog" 2>/dev/null | tail -n 20 >&2 || true
done
[ -n "$started" ] || die "could not start the Postfix test instance"

line="TW_POSTFIX_ADDR=127.0.0.1:$PORT"
printf '%s\n' "$line" > "$DIR/env"
printf '%s\n' "$line"
