#!/usr/bin/env bash
# The database's own speed for Tessera's writes: pgbench runs the statements
# of one `Issue` and of one `Refresh` (scripts/pgbench/*.sql, copied from
# crates/tessera-storage/src/sql/sessions.rs) against a fresh, migrated
# database, with as many clients as Tessera's Postgres pool has connections
# (16): the most transactions Tessera ever has open at once. BENCHMARKS.md
# sets Tessera's Issue and Refresh beside these figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
clients="${PGBENCH_CLIENTS:-16}"
seconds="${PGBENCH_SECONDS:-5}"
db="tessera_pgbench_$$"
admin="$TESSERA_TEST_DATABASE_URL"
url="${admin%/*}/$db"
psql "$admin" -qc "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
cargo build --release --locked -q -p tessera
"${CARGO_TARGET_DIR:-target}/release/tessera" migrate --database-url "$url" 2>/dev/null
psql "$url" -q -v clients="$clients" -f scripts/pgbench/setup.sql
for what in issue refresh; do
    printf '%s: ' "$what"
    pgbench "$url" -n -M prepared -c "$clients" -j 2 -T "$seconds" -D g=0 \
        -f "scripts/pgbench/$what.sql" 2>&1 |
        awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%.0f tx/s, mean latency %s ms\n", tps, lat}'
done
