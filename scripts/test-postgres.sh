#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for quorate's tests, from Debian's packages.
#
#   scripts/test-postgres.sh start DIR   # prints one line: postgres://postgres@127.0.0.1:PORT/quorate_test
#   scripts/test-postgres.sh stop DIR    # stops it; safe to call twice
#   (start DIR again after stop: the same cluster, data and port, e.g. to end an outage)
#
# Typical use:
#   export QUORATE_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start /tmp/quorate-pg)
#   cargo test
#   scripts/test-postgres.sh stop /tmp/quorate-pg
#
# The cluster listens only on 127.0.0.1 (a free port) and on a unix socket in DIR/socket,
# trusts every local connection (tests only!), runs with fsync off, and logs to DIR/log.
# As root it installs the `postgresql` package if no server is found, and runs the server as
# the `postgres` user (initdb refuses root). As another user it runs the server as that user.
# Only the URL goes to stdout; everything else goes to stderr or DIR/log.
set -euo pipefail

die() {
    echo "test-postgres.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

# The newest server in /usr/lib/postgresql/*/bin (Debian's layout), or nothing.
find_bin() {
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$newest" ] && [ -x "$newest/initdb" ] && [ -x "$newest/pg_ctl" ]; then
        echo "$newest"
    fi
}

install_server() {
    if [ "$(id -u)" -ne 0 ]; then
        die "no PostgreSQL server found in /usr/lib/postgresql/*/bin; install it as root with: apt-get install postgresql"
    fi
    command -v apt-get >/dev/null || die "no PostgreSQL server found and no apt-get to install one"
    echo "test-postgres.sh: installing postgresql with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql >&2 \
        || die "apt-get install postgresql failed"
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ -n "$owner" ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

# The owner of the cluster: `postgres` when we are root, else ourselves ("").
pick_owner() {
    owner=""
    if [ "$(id -u)" -eq 0 ]; then
        command -v runuser >/dev/null || die "running as root needs runuser (util-linux) to drop to the postgres user"
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres \
                || die "cannot create the postgres user"
        fi
        owner=postgres
    fi
}

# Whether something already listens on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local data=$dir/data sock=$dir/socket log=$dir/log

    pick_owner
    local bin
    bin=$(find_bin)
    if [ -z "$bin" ]; then
        install_server
        bin=$(find_bin)
        [ -n "$bin" ] || die "the postgresql package installed no server under /usr/lib/postgresql"
    fi

    # Already running from an earlier start: give its URL again.
    if [ -f "$dir/url" ] && [ -f "$data/postmaster.pid" ] \
        && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        cat "$dir/url"
        return
    fi

    if [ -n "$owner" ]; then
        chown "$owner:" "$dir"
        runuser -u "$owner" -- test -w "$dir" \
            || die "user $owner cannot reach $dir (is a parent directory private to root?); use a directory under /tmp"
    fi
    # The socket path must fit in sun_path (107 bytes) with its `.s.PGSQL.NNNNN` name.
    [ ${#sock} -le 90 ] || die "directory path too long for a unix socket: $sock"
    as_owner mkdir -p "$sock"
    : >"$log"
    [ -z "$owner" ] || chown "$owner:" "$log"

    if [ ! -f "$data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
            >>"$log" 2>&1 || die "initdb failed; see $log"
        # Test settings: local only, and durability traded for speed (the data is disposable).
        as_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
EOF
    fi

    # Pick a free port; if another process grabs it first, the server fails to bind: retry.
    # Below the kernel's ephemeral range: while the server is stopped (an outage test),
    # clients reconnecting to a port inside that range can be given the very same port as
    # their own and connect to themselves (TCP self-connect), holding it when the server
    # comes back.
    local attempt port lo=32768
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    [ "$lo" -gt 11000 ] 2>/dev/null || lo=32768
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
        # A cluster started again (an outage test) keeps its port, so clients reconnect.
        if [ "$attempt" = 1 ] && [ -f "$dir/port" ]; then port=$(cat "$dir/port"); fi
        port_in_use "$port" && continue
        if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "-p $port" \
            start >/dev/null 2>>"$log"; then
            break
        fi
        port=""
        grep -q "could not bind\|Address already in use" "$log" \
            || die "PostgreSQL did not start; see $log"
    done
    [ -n "$port" ] || die "no free port found for PostgreSQL; see $log"

    # Create the test database unless it survived a previous run of this cluster.
    if ! as_owner "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -Atq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'quorate_test'" | grep -q 1; then
        as_owner "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -q \
            -c "CREATE DATABASE quorate_test" >>"$log" 2>&1 \
            || die "cannot create database quorate_test; see $log"
    fi

    local url="postgres://postgres@127.0.0.1:$port/quorate_test"
    echo "$port" >"$dir/port"
    echo "$url" >"$dir/url"
    echo "$url"
}

stop() {
    [ -d "$dir" ] || { echo "test-postgres.sh: $dir does not exist; nothing to stop" >&2; return; }
    dir=$(cd "$dir" && pwd)
    local data=$dir/data
    if [ ! -f "$data/postmaster.pid" ]; then
        echo "test-postgres.sh: no server running in $dir" >&2
        rm -f "$dir/url"
        return
    fi
    pick_owner
    local bin
    bin=$(find_bin)
    [ -n "$bin" ] || die "no PostgreSQL server binaries found to stop $dir"
    if ! as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>>"$dir/log"; then
        # A stale postmaster.pid (crashed server) is fine; a server still up is not.
        if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            die "pg_ctl stop failed; see $dir/log"
        fi
    fi
    rm -f "$dir/url"
}

case "$action" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
