#!/usr/bin/env bash
# The domain crate knows no transport and no storage engine: fail if tonic,
# prost, sqlx, redis or deadpool appear anywhere in its normal dependency tree.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree --locked -p tessera-domain -e normal --prefix none)
if bad=$(grep -E '^(tonic|prost|sqlx|redis|deadpool)[-_a-z]* ' <<<"$tree"); then
    echo "tessera-domain must not depend on transport or storage crates, found:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "tessera-domain dependency tree: no tonic, prost, sqlx, redis or deadpool ($(wc -l <<<"$tree") entries)"
