#!/bin/sh
# The official postgres image's first-start behaviour, as far as the chart relies on it: an empty PGDATA becomes a
# cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD (password logins from anywhere, SCRAM), with a
# database POSTGRES_DB; the *.sql files of /docker-entrypoint-initdb.d then run in name order, through psql as the
# superuser on a server that listens on its socket only (the chart's create the studies' own role); then the server
# runs in the foreground, listening on every address.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    for file in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$file" ] || continue
        [ -n "${started:-}" ] || pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        started=1
        psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc --dbname "$db" -q -f "$file"
        echo "postgres-entrypoint: ran $file"
    done
    [ -z "${started:-}" ] || pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
