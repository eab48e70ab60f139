#!/usr/bin/env bash
# The scripts the README says to source leave the reader's shell as it was:
# no `set -e`, `-u` or `pipefail` carried over (the next failing command
# would close an interactive shell), their environment handed back, and a
# failure returned as 1 rather than an exit.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in tools services clients dev-env; do
    out=$(bash -c "
        set +euo pipefail
        source scripts/$script.sh || exit 9
        case \$- in *e*|*u*) echo 'set -e or -u left on'; exit 1;; esac
        set -o | grep -q '^pipefail[[:space:]]*off' || { echo 'pipefail left on'; exit 1; }
        false; echo alive" 2>/dev/null) || { echo "check-sourcing: scripts/$script.sh: $out" >&2; exit 1; }
    [ "$out" = alive ] || { echo "check-sourcing: scripts/$script.sh: $out" >&2; exit 1; }
done
# A failure is returned, not an exit of the reader's shell.
out=$(TESSERA_PG_BINDIR=/nonexistent bash -c 'source scripts/services.sh; echo "returned $?"' 2>/dev/null)
[ "$out" = "returned 1" ] || { echo "check-sourcing: a failing services.sh did not return 1: $out" >&2; exit 1; }
[ "$(bash -c 'source scripts/tools.sh; command -v buf' )" != "" ] || { echo "check-sourcing: buf not on PATH" >&2; exit 1; }
# What the other scripts read after sourcing (interop.sh: the tools dir).
[ -d "$(bash -c 'source scripts/tools.sh; echo "$TESSERA_TOOLS_DIR"')" ] || { echo "check-sourcing: TESSERA_TOOLS_DIR not handed back" >&2; exit 1; }
echo "check-sourcing: tools, services, clients and dev-env leave the shell's options alone and hand back their environment"
