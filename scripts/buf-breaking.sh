#!/usr/bin/env bash
# The contract never breaks silently: `buf breaking` (buf.yaml's FILE rules)
# compares the protos of the work tree with those of a commit, by default the
# previous one (HEAD~1: in CI, the previous commit of main). Usage:
#   scripts/buf-breaking.sh [REF]
# A first commit has nothing to compare with, and a shallow clone may not
# have the commit: both are said, not passed over in silence.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ref="${1:-HEAD~1}"
resolve() { git rev-parse --verify -q "$ref^{commit}"; }
shallow() { [ "$(git rev-parse --is-shallow-repository)" = true ]; }
against=$(resolve) || true
if [ -z "$against" ] && shallow; then
    echo "buf-breaking.sh: this clone is shallow and lacks $ref: fetching one more commit" >&2
    timeout 60 git fetch -q --deepen=1 >&2 || true
    against=$(resolve) || true
fi
if [ -z "$against" ]; then
    if shallow; then
        echo "buf breaking: NOT RUN: this clone is shallow and $ref could not be fetched (git fetch --unshallow, then run scripts/buf-breaking.sh)"
        exit 0
    elif [ "$ref" = HEAD~1 ]; then
        echo "buf breaking: NOT RUN: HEAD is the first commit, there is no earlier contract to compare with"
        exit 0
    fi
    echo "buf-breaking.sh: no commit $ref in this clone" >&2
    exit 1
fi
if ! git cat-file -e "$against:proto" 2>/dev/null; then
    echo "buf breaking: NOT RUN: $ref ($against) has no proto/ to compare with"
    exit 0
fi
buf breaking --against ".git#ref=$against"
echo "buf breaking: proto/ keeps the contract of $ref ($(git log -1 --format='%h %s' "$against" | cut -c1-72))"
