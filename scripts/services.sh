#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer for
# the test suite: starts them when they are installed but stopped, installs
# them from Debian's packages when missing (needs root), and fails loudly
# otherwise. Source it: it exports TESSERA_TEST_DATABASE_URL and
# TESSERA_TEST_REDIS_URL.
# Everything runs in a subshell with its own `set -euo pipefail`: sourcing
# this file hands back only the environment named at its end, and never
# changes the options of the reader's shell (a failure returns 1).
_tessera_sourced() (
    exec 3>&1 1>&2 # stdout: only the environment handed back
    set -euo pipefail

    : "${TESSERA_TEST_DATABASE_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
    : "${TESSERA_TEST_REDIS_URL:=redis://127.0.0.1:6379}"
    export TESSERA_TEST_DATABASE_URL TESSERA_TEST_REDIS_URL

    die() { echo "services.sh: $*" >&2; exit 1; }

    apt_install() {
        [ "$(id -u)" = 0 ] || die "$* is missing and installing it needs root (apt-get install $*)"
        echo "services.sh: installing $* from Debian's packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    }

    wait_for() { # wait_for SECONDS COMMAND...
        local n=$(( $1 * 5 )); shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
        return 1
    }

    pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
    pg_login() { psql "$TESSERA_TEST_DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; }

    if ! command -v pg_isready >/dev/null 2>&1 || ! pg_up; then
        command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        if [ -z "$version" ]; then
            version=$(ls /usr/lib/postgresql | sort -V | tail -1)
            pg_createcluster "$version" main >/dev/null
        fi
        echo "services.sh: starting PostgreSQL $version" >&2
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        wait_for 30 pg_up || die "PostgreSQL did not start on 127.0.0.1:5432"
    fi
    if ! pg_login; then
        # A fresh Debian cluster asks for a password on TCP: give the postgres
        # role one (local peer auth lets root do that) and use it.
        if [ "$(id -u)" = 0 ] && command -v su >/dev/null; then
            su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD 'tessera-test'\"" >/dev/null
            TESSERA_TEST_DATABASE_URL=postgres://postgres:tessera-test@127.0.0.1:5432/postgres
            export TESSERA_TEST_DATABASE_URL
        fi
        pg_login || die "cannot log in to PostgreSQL as postgres on 127.0.0.1:5432; set TESSERA_TEST_DATABASE_URL"
    fi

    # The server binaries (initdb, pg_ctl) for the fault tests' own clusters:
    # Debian keeps them under /usr/lib/postgresql/<version>/bin.
    if [ -z "${TESSERA_PG_BINDIR:-}" ]; then
        TESSERA_PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    fi
    [ -x "${TESSERA_PG_BINDIR:-}/initdb" ] || die "no initdb found; set TESSERA_PG_BINDIR"
    export TESSERA_PG_BINDIR

    redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
    if ! command -v redis-cli >/dev/null 2>&1 || ! redis_up; then
        command -v redis-server >/dev/null 2>&1 || apt_install redis-server
        echo "services.sh: starting Redis" >&2
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir /tmp --logfile "" >/dev/null
        wait_for 15 redis_up || die "Redis did not start on 127.0.0.1:6379"
    fi

    # The README walk-throughs (scripts/walkthrough.sh) listen on
    # fixed ports inside Linux's ephemeral range (50051-50053): reserved,
    # so no outgoing connection (to Postgres, Redis) is given one of them
    # (its TIME-WAIT blocks a bind for a minute after it closes) before a
    # server binds it (bind fails with "address already in use,
    # though nothing listens there"). The kernel keeps a set: adding twice
    # is harmless. Needs root; elsewhere a collision stays possible, rare.
    reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
    if [ -w "$reserved" ]; then
        current=$(cat "$reserved")
        echo "${current:+$current,}50051-50053" 2>/dev/null >"$reserved" || true
    fi

    # The gateway tests (tests/e2e/gateway_procs.rs) run nginx and Caddy of their
    # own, on free ports: only the binaries are needed. /usr/sbin may be off a
    # non-root PATH.
    has_binary() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
    stop_service() { # a service a package just started: stopped, off at boot
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            systemctl disable --now "$1" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$1" ]; then
            "/etc/init.d/$1" stop >/dev/null 2>&1 || true
            update-rc.d "$1" disable >/dev/null 2>&1 || true
        fi
    }
    if ! has_binary nginx || ! has_binary caddy; then
        apt_install nginx caddy || die "apt-get install nginx caddy failed"
        # Debian's packages start a system nginx (port 80) and Caddy where
        # services may start; nothing here uses them.
        stop_service nginx
        stop_service caddy
        has_binary nginx || die "nginx is still missing after apt-get install nginx"
        has_binary caddy || die "caddy is still missing after apt-get install caddy"
    fi
    for v in TESSERA_TEST_DATABASE_URL TESSERA_TEST_REDIS_URL TESSERA_PG_BINDIR; do printf 'export %s=%q\n' "$v" "${!v}"; done >&3
)
# shellcheck source=scripts/hand-back.sh
source "$(dirname "${BASH_SOURCE[0]}")/hand-back.sh" || { return 1 2>/dev/null || exit 1; }
