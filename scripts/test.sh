#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end suite against the embedded
# store and against real PostgreSQL + Redis (started or installed first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

# Each test creates its own database tessera_t_<random> and drops it at the
# end; drop what an interrupted run left behind.
psql "$TESSERA_TEST_DATABASE_URL" -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'tessera\_t\_%'" |
    while read -r db; do
        psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
    done

# Every test app logs here; afterwards the logs are searched for the key
# material the tests' deployments held.
scan_dir=$(mktemp -d)
trap 'rm -rf "$scan_dir"' EXIT
export TESSERA_TEST_LOG="$scan_dir/logs" TESSERA_TEST_SECRETS="$scan_dir/secrets"
cargo test --workspace --locked "$@"
if [ $# -eq 0 ]; then
    scripts/scan-logs.sh "$TESSERA_TEST_LOG" "$TESSERA_TEST_SECRETS"
fi
