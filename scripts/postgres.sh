#!/usr/bin/env bash
# Installs (from Debian's `postgresql` package) and runs a throwaway PostgreSQL server on loopback for the
# tests, CI and local trials. Idempotent: `start` on a running server only prints its URL.
#
#   scripts/postgres.sh start    install if needed, initialise once, start, create role and database
#   scripts/postgres.sh stop     stop the server (the data stays; tests use this to simulate an outage)
#   scripts/postgres.sh url      print the SQLAlchemy URL to use
#   scripts/postgres.sh status   exit 0 when the server accepts connections
#   scripts/postgres.sh database NAME PASSWORD
#                                a login role NAME (password PASSWORD) owning a database NAME, created if missing
#                                (the password is set either way); prints its URL. Tests use it for a password
#                                that appears nowhere else, and for one database per tenant.
#   scripts/postgres.sh drop NAME   drop that database and role (their sessions are ended first)
#   scripts/postgres.sh crash    SIGKILL the server (a crash, not a shutdown), then start it again: crash recovery
#
# Settings (environment): FTSTUDY_PG_PORT (55432), FTSTUDY_PG_DIR (/var/tmp/ftstudy-postgres-$PORT: a place
# the `postgres` account can reach when we run as root, which a home directory is not), FTSTUDY_PG_MAX_CONNECTIONS
# (200; read when the server starts: bench/operator_latency.py's 100-study run uses a second server with more),
# FTSTUDY_PG_LISTEN (127.0.0.1: the addresses to listen on, comma-separated, 127.0.0.1 among them; the real node's
# tests add the node's address so that pods reach it, and clients on the node's own subnets may then log in with
# the password).
set -euo pipefail

PORT="${FTSTUDY_PG_PORT:-55432}"
DIR="${FTSTUDY_PG_DIR:-/var/tmp/ftstudy-postgres-$PORT}"
LISTEN="${FTSTUDY_PG_LISTEN:-127.0.0.1}"
USER_NAME=ftstudy
PASSWORD=ftstudy
DB=ftstudy

url() { echo "postgresql+psycopg2://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"; }

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$d" ] && echo "$d"
}

# PostgreSQL refuses to run as root; run its programs as the unprivileged `postgres` account when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
    if [ -z "$(bindir)" ]; then
        echo "postgres.sh: installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
}

ready() { "$(bindir)/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

start() {
    install
    local bin; bin=$(bindir)
    if ready; then url; return 0; fi
    mkdir -p "$DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR"; chmod 700 "$DIR"; fi
    if [ ! -s "$DIR/PG_VERSION" ]; then
        local pwfile; pwfile=$(mktemp); echo "$PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
        as_owner "$bin/initdb" -D "$DIR" -U postgres --auth=trust --auth-host=scram-sha-256 \
            --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >/dev/null
        rm -f "$pwfile"
    fi
    # Beyond loopback, password logins from the subnets the machine is on (a real node's pods are on its bridge).
    if [ "$LISTEN" != 127.0.0.1 ] && ! grep -q '^host all all samenet' "$DIR/pg_hba.conf"; then
        echo "host all all samenet scram-sha-256" | as_owner tee -a "$DIR/pg_hba.conf" >/dev/null
    fi
    # A unix socket directory we own: the Debian default (/var/run/postgresql) may not exist or be writable.
    as_owner "$bin/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 \
        -o "-h $LISTEN -p $PORT -k $DIR -c max_connections=${FTSTUDY_PG_MAX_CONNECTIONS:-200} -c fsync=off" start >/dev/null
    if ! as_owner "$bin/psql" -h "$DIR" -p "$PORT" -U postgres -tAc \
            "SELECT 1 FROM pg_roles WHERE rolname='$USER_NAME'" postgres | grep -q 1; then
        as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c \
            "CREATE ROLE $USER_NAME LOGIN CREATEDB PASSWORD '$PASSWORD'" postgres
        as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c "CREATE DATABASE $DB OWNER $USER_NAME" postgres
    fi
    url
}

database() {
    local name="$1" password="$2" bin; bin=$(bindir)
    case "$name$password" in *[!A-Za-z0-9_-]*) echo "postgres.sh: NAME and PASSWORD: letters, digits, _ and - only" >&2; exit 2 ;; esac
    ready || { echo "postgres.sh: the server is not running (postgres.sh start)" >&2; exit 1; }
    local role="\"$name\""
    if ! as_owner "$bin/psql" -h "$DIR" -p "$PORT" -U postgres -tAc \
            "SELECT 1 FROM pg_roles WHERE rolname='$name'" postgres | grep -q 1; then
        as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c "CREATE ROLE $role LOGIN" postgres
    fi
    as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c "ALTER ROLE $role PASSWORD '$password'" postgres
    if ! as_owner "$bin/psql" -h "$DIR" -p "$PORT" -U postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname='$name'" postgres | grep -q 1; then
        as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c "CREATE DATABASE $role OWNER $role" postgres
        as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres -c "REVOKE ALL ON DATABASE $role FROM PUBLIC" postgres
    fi
    echo "postgresql+psycopg2://$name:$password@127.0.0.1:$PORT/$name"
}

drop() {
    local name="$1" bin; bin=$(bindir)
    case "$name" in *[!A-Za-z0-9_-]*|ftstudy|postgres) echo "postgres.sh: will not drop $name" >&2; exit 2 ;; esac
    as_owner "$bin/psql" -q -h "$DIR" -p "$PORT" -U postgres \
        -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename='$name' OR datname='$name'" \
        -c "DROP DATABASE IF EXISTS \"$name\"" -c "DROP ROLE IF EXISTS \"$name\"" postgres >/dev/null
}

crash() {
    [ -s "$DIR/postmaster.pid" ] || { echo "postgres.sh: not running" >&2; exit 1; }
    local pid; pid=$(head -n 1 "$DIR/postmaster.pid")
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    # Its backends notice the postmaster's death and exit; until they have, a new server cannot start.
    for _ in $(seq 1 60); do
        if start >/dev/null 2>&1; then url; return 0; fi
        sleep 0.5
    done
    echo "postgres.sh: the server did not come back after the crash" >&2; exit 1
}

stop() {
    local bin; bin=$(bindir)
    [ -n "$bin" ] || return 0
    if [ -s "$DIR/postmaster.pid" ]; then as_owner "$bin/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null || true; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    status) ready ;;
    crash) crash ;;
    drop) [ $# -eq 2 ] || { echo "usage: $0 drop NAME" >&2; exit 2; }; drop "$2" ;;
    database) [ $# -eq 3 ] || { echo "usage: $0 database NAME PASSWORD" >&2; exit 2; }; database "$2" "$3" ;;
    *) echo "usage: $0 start|stop|url|status|crash|database NAME PASSWORD|drop NAME" >&2; exit 2 ;;
esac
