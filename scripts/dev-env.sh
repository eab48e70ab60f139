#!/usr/bin/env bash
# Every development tool, in one command: `source scripts/dev-env.sh`.
# PostgreSQL and Redis answering for the tests (scripts/services.sh), the
# checking tools (scripts/tools.sh: buf, grpcurl, cargo-machete, hadolint,
# docker-compose) and the pinned Python and Node client tools
# (scripts/clients.sh), installed into caches outside the repository and
# put on PATH. Like each of those, it never changes the options of the
# reader's shell; a failure returns 1 and says which part failed.
_tessera_dev_dir="$(dirname "${BASH_SOURCE[0]}")"
for _tessera_part in services tools clients; do
    # shellcheck source=/dev/null
    if ! source "$_tessera_dev_dir/$_tessera_part.sh"; then
        echo "dev-env.sh: scripts/$_tessera_part.sh failed (above)" >&2
        unset _tessera_dev_dir _tessera_part
        return 1 2>/dev/null || exit 1
    fi
done
unset _tessera_dev_dir _tessera_part
