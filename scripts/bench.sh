#!/usr/bin/env bash
# Speed over the wire (BENCHMARKS.md): the release `tessera` binary under
# `tessera-bench`, a closed-loop gRPC load generator on loopback. Every run
# measures the floor (gRPC health Check on the same server) first.
#
#   scripts/bench.sh smoke   a few seconds per mode; fails on gross
#                            regressions (ratios within the run). CI runs it.
#   scripts/bench.sh full    the BENCHMARKS.md run: embedded SQLite with the
#                            Redis-deny-list peer, then Postgres + Redis,
#                            then revocation propagation to 3 verifiers.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-smoke}"
cargo build --release --locked -q -p tessera -p tessera-bench
bin="${CARGO_TARGET_DIR:-target}/release"

case "$mode" in
smoke)
    source scripts/services.sh # nginx, for the gateway mode
    "$bin/tessera-bench" run --modes health,verify,verify-repeat,issue,forward-auth,nginx \
        --duration 1 --warmup 0.3 --single-duration 1 --pool 8000 --check
    ;;
full)
    source scripts/services.sh
    echo "## Embedded SQLite, with the Redis-deny-list peer"
    "$bin/tessera-bench" run \
        --modes health,verify,verify-repeat,verify-strong,issue,refresh,revoke,forward-auth,nginx \
        --peer --redis-url "$TESSERA_TEST_REDIS_URL" --duration 4 --pool 60000
    db="tessera_bench_$$"
    psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $db"
    trap 'psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
    echo "## Postgres + Redis"
    "$bin/tessera-bench" run \
        --modes health,verify,verify-repeat,verify-strong,issue,refresh,revoke \
        --database-url "${TESSERA_TEST_DATABASE_URL%/*}/$db" \
        --redis-url "$TESSERA_TEST_REDIS_URL" --duration 4 --pool 60000
    psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"
    psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $db"
    echo "## Propagation"
    "$bin/tessera-bench" propagation --database-url "${TESSERA_TEST_DATABASE_URL%/*}/$db" \
        --verifiers 3 --revocations 1000
    ;;
*)
    echo "usage: scripts/bench.sh [smoke|full]" >&2
    exit 2
    ;;
esac
