#!/usr/bin/env bash
# Searches the logs of the whole test suite for key material: every KEK and
# private key (base64url, base64, hex) the suite's deployments held, and the
# generic signs of a private key. Fails if any is found, or if there was
# nothing to search (so the scan cannot pass by accident).
set -euo pipefail
log=$1 secrets=$2
[ -s "$log" ] || { echo "scan-logs: no logs were written to $log" >&2; exit 1; }
[ -s "$secrets" ] || { echo "scan-logs: no key material was recorded in $secrets" >&2; exit 1; }
found=0
# An empty pattern would match every line: refuse one rather than pass or
# fail for the wrong reason.
if grep -qx '' "$secrets"; then
    echo "scan-logs: an empty piece of key material was recorded" >&2
    exit 1
fi
if grep -F -f "$secrets" "$log" >/dev/null; then
    # Where, and how long the matching piece is: never the piece itself.
    grep -n -F -o -f "$secrets" "$log" | head -3 |
        while IFS=: read -r line piece; do
            echo "scan-logs: key material (${#piece} characters) on log line $line: $(sed -n "${line}p" "$log" | cut -c1-120)" >&2
        done
    echo "scan-logs: key material found in the logs" >&2
    found=1
fi
if grep -E 'PRIVATE KEY|"d":"' "$log" >/dev/null; then
    echo "scan-logs: something that looks like a private key is in the logs" >&2
    found=1
fi
[ "$found" = 0 ] || exit 1
echo "scan-logs: $(wc -l <"$log") log lines searched for $(sort -u "$secrets" | wc -l) pieces of key material: none found"
