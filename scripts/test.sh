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

cargo test --workspace --locked "$@"
