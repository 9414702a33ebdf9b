#!/usr/bin/env bash
# Start (or stop) a throw-away, loopback-only Dovecot IMAP server for the
# mailflow tests: the bounce mailbox the probe reads its DSNs from.
#
# Usage:
#   scripts/dovecot-test-instance.sh [start] [DIR]   # default mode: start
#   scripts/dovecot-test-instance.sh stop [DIR]
#
# DIR defaults to <repo>/target/tw-dovecot.
#
# start: installs the Debian "dovecot-imapd" package if missing (without
#   starting the system's instance; with sudo when not root), stops an
#   instance left over in DIR, writes a fresh one and starts it on
#   127.0.0.1:<free port>, waits for its IMAPS greeting and prints on stdout:
#       TW_DOVECOT_ADDR=127.0.0.1:<port>
#       TW_DOVECOT_MAILDIR=<maildir>
#       TW_DOVECOT_USER=bounces
#       TW_DOVECOT_PASSWORD_FILE=<file holding the password>
#       TW_DOVECOT_CA=<PEM of the CA that signed the server certificate>
#       TW_DOVECOT_STARTTLS_ADDR=127.0.0.1:<port>   (plain IMAP, STARTTLS required)
#   The same lines are written to DIR/env. Everything else goes to stderr.
#
# stop: stops the instance in DIR if it is running (idempotent).
#
# The instance: IMAPS (TLS from the first byte) and IMAP on which STARTTLS is
#   required before any login (ssl = required), a certificate for localhost and 127.0.0.1 signed by a CA generated here with
#   openssl (or the CA in TW_DOVECOT_CA_CERT/TW_DOVECOT_CA_KEY if both are
#   set), one passwd-file user "bounces" with a random password, and
#   mail_location = maildir:<maildir> (Maildir++: folder X is <maildir>/.X).
#   The whole Dovecot runs unprivileged: as the calling user, or as
#   nobody:nogroup when called as root (Dovecot refuses mail access as uid 0).
#   Files it must own are chowned to that user; a test process writing into
#   the Maildir as root must leave directories it creates to that user too.
#   When nobody cannot reach DIR (a directory above it is not searchable by
#   others) the runtime files go in /var/tmp/tw-dovecot-<hash of DIR> instead.
#   Dovecot's own log is <runtime>/log/dovecot.log.
set -euo pipefail

log() { printf 'dovecot-test-instance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

MODE=start
case "${1:-}" in
  start|stop) MODE=$1; shift ;;
  -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 0 ;;
esac
[ $# -le 1 ] || die "usage: $0 [start|stop] [DIR]"

DIR=${1:-$REPO/target/tw-dovecot}
case "$DIR" in /*) ;; *) DIR=$PWD/$DIR ;; esac
DIR=${DIR%/}

if [ "$(id -u)" -eq 0 ]; then
  RUN_USER=nobody
  RUN_GROUP=$(id -gn nobody)
  AS_USER=(setpriv --reuid=nobody --regid="$RUN_GROUP" --clear-groups --)
else
  RUN_USER=$(id -un)
  RUN_GROUP=$(id -gn)
  AS_USER=()
fi
RUN_UID=$(id -u "$RUN_USER")
RUN_GID=$(getent group "$RUN_GROUP" | cut -d: -f3)

# Every existing directory from $1 up to / must be searchable by RUN_USER.
reachable_by_run_user() {
  local p=$1
  [ "$(id -u)" -eq 0 ] || return 0
  while :; do
    if [ -e "$p" ]; then
      (( (8#$(stat -c %a "$p") & 8#001) != 0 )) || return 1
    fi
    [ "$p" = / ] && return 0
    p=$(dirname "$p")
  done
}

if reachable_by_run_user "$DIR"; then
  BASE=$DIR
else
  BASE=/var/tmp/tw-dovecot-$(printf '%s' "$DIR" | sha256sum | cut -c1-12)
fi
CONF=$BASE/config
RUNDIR=$BASE/run
STATE=$BASE/state
LOGDIR=$BASE/log
TLS=$BASE/tls
MAILDIR=$BASE/maildir
USER_NAME=bounces

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

is_running() {
  [ -f "$RUNDIR/master.pid" ] && kill -0 "$(cat "$RUNDIR/master.pid")" 2>/dev/null
}

stop_instance() {
  if ! is_running; then
    log "no instance running in $BASE"
    return 0
  fi
  local pid
  pid=$(cat "$RUNDIR/master.pid")
  log "stopping instance in $BASE (master pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    is_running || break
    sleep 0.1
  done
  if is_running; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.3
  fi
  is_running && die "could not stop the instance in $BASE"
  log "stopped"
}

install_dovecot() {
  if [ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/imap-login ]; then
    return 0
  fi
  log "installing the dovecot-imapd package"
  # The package would start the system's instance; deny service starts during the
  # install unless a policy-rc.d is already there (as scripts/postfix-test-instance.sh).
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    own_policy=1
  fi
  local rc=0
  local apt_opts=(-y -q --no-install-recommends)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" dovecot-imapd >&2; then
    log "install failed; running apt-get update once and retrying"
    if as_root apt-get update -q >&2; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" dovecot-imapd >&2 || rc=$?
    else
      rc=1
    fi
  fi
  [ -n "$own_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "could not install dovecot-imapd"
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
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

# Wait until 127.0.0.1:$1 answers with an IMAP "* OK" greeting over TLS.
wait_greeting() {
  local port=$1 timeout=$2 deadline line
  deadline=$(( $(date +%s) + timeout ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    line=$(printf 'a LOGOUT\r\n' | timeout 5 openssl s_client -quiet -verify_return_error \
      -CAfile "$TLS/ca.crt" -verify_hostname localhost -connect "127.0.0.1:$port" 2>/dev/null | head -n 1 || true)
    line=${line%$'\r'}
    if [[ $line == "* OK"* ]]; then
      log "greeting: $line"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

make_certificates() {
  mkdir -p "$TLS"
  if [ -n "${TW_DOVECOT_CA_CERT:-}" ] && [ -n "${TW_DOVECOT_CA_KEY:-}" ]; then
    cp "$TW_DOVECOT_CA_CERT" "$TLS/ca.crt"
    cp "$TW_DOVECOT_CA_KEY" "$TLS/ca.key"
  else
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$TLS/ca.key" -out "$TLS/ca.crt" -days 30 -subj "/CN=tw-dovecot test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  fi
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" -subj "/CN=localhost" 2>/dev/null
  cat > "$TLS/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 30 -extfile "$TLS/server.ext" -out "$TLS/server.crt" 2>/dev/null
  rm -f "$TLS/server.csr" "$TLS/ca.srl"
  chmod 600 "$TLS/ca.key" "$TLS/server.key"
}

write_config() {
  local port=$1 starttls_port=$2
  cat > "$CONF/dovecot.conf" <<EOF
# Generated by scripts/dovecot-test-instance.sh; rewritten on every start.
protocols = imap
listen = 127.0.0.1
base_dir = $RUNDIR
state_dir = $STATE
instance_name = tw-dovecot-$(printf '%s' "$BASE" | sha256sum | cut -c1-8)
log_path = $LOGDIR/dovecot.log
info_log_path = $LOGDIR/dovecot.log
default_internal_user = $RUN_USER
default_internal_group = $RUN_GROUP
default_login_user = $RUN_USER
first_valid_uid = $RUN_UID
last_valid_uid = 0
first_valid_gid = 0

ssl = required
ssl_cert = <$TLS/server.crt
ssl_key = <$TLS/server.key
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login

passdb {
  driver = passwd-file
  args = scheme=PLAIN $CONF/users
}
userdb {
  driver = static
  args = uid=$RUN_UID gid=$RUN_GID home=$BASE/home
}
mail_location = maildir:$MAILDIR

service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $starttls_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $port
    ssl = yes
  }
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-reader {
    mode = 0600
  }
  unix_listener stats-writer {
    mode = 0600
  }
}
EOF
}

# ---------------------------------------------------------------------------

if [ "$MODE" = stop ]; then
  stop_instance
  exit 0
fi

install_dovecot
command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
stop_instance
[ "$BASE" = "$DIR" ] || log "note: $RUN_USER cannot reach $DIR; the instance lives in $BASE"

umask 022
rm -rf "$CONF" "$RUNDIR" "$STATE" "$LOGDIR" "$TLS" "$MAILDIR" "$BASE/home" "$DIR/env"
mkdir -p "$DIR" "$BASE" "$CONF" "$RUNDIR" "$STATE" "$LOGDIR" "$BASE/home" \
  "$MAILDIR/cur" "$MAILDIR/new" "$MAILDIR/tmp"
make_certificates

PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s:{PLAIN}%s::::::\n' "$USER_NAME" "$PASSWORD" > "$CONF/users"
printf '%s\n' "$PASSWORD" > "$BASE/password"
chmod 600 "$CONF/users" "$BASE/password"

if [ "$(id -u)" -eq 0 ]; then
  chown -R "$RUN_USER:$RUN_GROUP" "$CONF" "$RUNDIR" "$STATE" "$LOGDIR" "$TLS" "$MAILDIR" "$BASE/home"
  # The test process reads the password and the CA; Dovecot needs neither of these two.
  chown root:root "$BASE/password"
fi

started=
for attempt in 1 2 3; do
  PORT=$(free_port) || die "could not find a free port"
  STARTTLS_PORT=$(free_port) || die "could not find a free port"
  [ "$STARTTLS_PORT" != "$PORT" ] || STARTTLS_PORT=$(free_port)
  write_config "$PORT" "$STARTTLS_PORT"
  [ "$(id -u)" -eq 0 ] && chown "$RUN_USER:$RUN_GROUP" "$CONF/dovecot.conf"
  log "starting instance in $BASE on 127.0.0.1:$PORT as $RUN_USER (attempt $attempt)"
  lines=0
  [ -f "$LOGDIR/dovecot.log" ] && lines=$(wc -l < "$LOGDIR/dovecot.log")
  # The master keeps the descriptors it was started with; none may be a caller's pipe
  # (a "$(...)" or "| tail" would wait for it until Dovecot stops).
  if "${AS_USER[@]}" /usr/sbin/dovecot -c "$CONF/dovecot.conf" </dev/null >>"$LOGDIR/start.log" 2>&1; then
    if wait_greeting "$PORT" 20; then
      started=1
      break
    fi
    log "no IMAPS greeting on 127.0.0.1:$PORT within 20s"
    stop_instance || true
  else
    log "dovecot failed to start"
    tail -n 5 "$LOGDIR/start.log" >&2 || true
  fi
  tail -n +"$((lines + 1))" "$LOGDIR/dovecot.log" 2>/dev/null | tail -n 20 >&2 || true
done
[ -n "$started" ] || die "could not start the Dovecot test instance"

{
  printf 'TW_DOVECOT_ADDR=127.0.0.1:%s\n' "$PORT"
  printf 'TW_DOVECOT_MAILDIR=%s\n' "$MAILDIR"
  printf 'TW_DOVECOT_USER=%s\n' "$USER_NAME"
  printf 'TW_DOVECOT_PASSWORD_FILE=%s\n' "$BASE/password"
  printf 'TW_DOVECOT_CA=%s\n' "$TLS/ca.crt"
  printf 'TW_DOVECOT_STARTTLS_ADDR=127.0.0.1:%s\n' "$STARTTLS_PORT"
} > "$DIR/env"
cat "$DIR/env"
