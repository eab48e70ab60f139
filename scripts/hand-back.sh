# Sourced at the end of scripts/tools.sh, services.sh and clients.sh: runs
# their `_tessera_sourced` (a subshell with its own `set -euo pipefail`) and
# evaluates the `export` lines it prints, so the reader's shell gets the
# environment and never the options. Returns 1 when it failed.
if _tessera_env=$(_tessera_sourced); then
    eval "$_tessera_env"
    _tessera_rc=0
else
    _tessera_rc=1
fi
unset -f _tessera_sourced
unset _tessera_env
eval "unset _tessera_rc; return $_tessera_rc"
