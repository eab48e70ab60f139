#!/usr/bin/env bash
# Instructions per call of each benchmarked operation, counted by callgrind
# (repeatable on a shared machine, unlike wall-clock time): the count of a
# run with N iterations minus a run with 0, divided by N.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
cargo build -q --release -p tessera-domain --example cost
bin="${CARGO_TARGET_DIR:-target}/release/examples/cost"
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base=$(count setup 0)
for op in bare_verify pipeline bare_sign tessera_sign; do
    total=$(count "$op" "$N")
    echo "$op $(( (total - base) / N )) instructions/call"
done
