#!/usr/bin/env bash
# test/pg.sh start|stop|env: a throwaway PostgreSQL 15 cluster for tests and demos, from the
# binaries of $PG_CONFIG (else the pg_config on PATH).  As any user but root the cluster
# belongs to that user; PostgreSQL refuses to run as root, so as root it belongs to the
# unprivileged "postgres" user (created by Debian's package).  Clients reach it
# over a Unix socket with trust authentication; `eval "$(test/pg.sh env)"` sets PG*.
set -euo pipefail
PGBIN=${PGBIN:-$("${PG_CONFIG:-pg_config}" --bindir)}
PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-pgtest-$(id -un)}
PGTEST_PORT=${PGTEST_PORT:-54329}

as_owner() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
	if [ -f "$PGTEST_DIR/data/postmaster.pid" ] && as_owner "$PGBIN/pg_ctl" -D "$PGTEST_DIR/data" status >/dev/null 2>&1; then
		echo "cluster already running in $PGTEST_DIR"; exit 0
	fi
	# start afresh, but delete only a directory that is empty or one of ours (our marker, or the
	# layout this script made before it had one: initdb.log beside data/)
	if [ -d "$PGTEST_DIR" ] && [ -n "$(ls -A "$PGTEST_DIR")" ] && [ ! -f "$PGTEST_DIR/.pepnet-pgtest" ] \
		&& ! { [ -f "$PGTEST_DIR/initdb.log" ] && [ -f "$PGTEST_DIR/data/PG_VERSION" ]; }; then
		echo "test/pg.sh: $PGTEST_DIR exists and is not a pepnet test cluster; not deleting it (set PGTEST_DIR to a new or empty directory)" >&2
		exit 1
	fi
	rm -rf "$PGTEST_DIR"
	mkdir -p "$PGTEST_DIR"
	touch "$PGTEST_DIR/.pepnet-pgtest"
	[ "$(id -u)" = 0 ] && chown postgres: "$PGTEST_DIR"
	as_owner "$PGBIN/initdb" -D "$PGTEST_DIR/data" -A trust -U postgres --no-sync >"$PGTEST_DIR/initdb.log" 2>&1 \
		|| { cat "$PGTEST_DIR/initdb.log"; exit 1; }
	cat >>"$PGTEST_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$PGTEST_DIR'
port = $PGTEST_PORT
fsync = off
max_connections = 40
shared_buffers = 256MB
max_worker_processes = 8
max_parallel_workers_per_gather = 2
CONF
	as_owner "$PGBIN/pg_ctl" -D "$PGTEST_DIR/data" -l "$PGTEST_DIR/server.log" -w start >/dev/null
	echo "cluster started in $PGTEST_DIR (port $PGTEST_PORT)"
	;;
stop)
	if [ -d "$PGTEST_DIR/data" ]; then
		as_owner "$PGBIN/pg_ctl" -D "$PGTEST_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	;;
env)
	echo "export PGHOST=$PGTEST_DIR PGPORT=$PGTEST_PORT PGUSER=postgres PGDATABASE=postgres"
	;;
*)
	echo "usage: $0 start|stop|env" >&2; exit 2
	;;
esac
