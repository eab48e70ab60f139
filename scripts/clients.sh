#!/usr/bin/env bash
# Installs the pinned tools of the Python and Node clients into a cache
# outside the repository and prints nothing else. Source it: it puts the
# Python virtualenv and the Node tools on PATH (so `python` is the venv's,
# which buf.gen.yaml relies on) and links clients/node/node_modules to the
# cache (git-ignored), where tsc and node resolve the packages from.
#
# Python: grpcio-tools (protoc and the python, pyi and grpc_python
# generators), grpcio, grpcio-status and googleapis-common-protos (the
# google.rpc error details), pytest.
# Node: ts-proto (the TypeScript generator, grpc-js services) and the runtime
# its code imports (@grpc/grpc-js, @bufbuild/protobuf), typescript and
# @types/node to compile, protobufjs and google-proto-files (the googleapis
# protos) to decode google.rpc error details.
# Everything runs in a subshell with its own `set -euo pipefail`: sourcing
# this file hands back only the environment named at its end, and never
# changes the options of the reader's shell (a failure returns 1).
_tessera_sourced() (
    exec 3>&1 1>&2 # stdout: only the environment handed back
    set -euo pipefail
    TESSERA_CLIENTS_DIR="${TESSERA_CLIENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-clients}"
    # Python's whole tree is pinned (pytest's and grpcio's dependencies too);
    # npm resolves the Node packages' own dependencies within their ranges.
    PIP_PINS="grpcio-tools==1.85.1 grpcio==1.85.3 grpcio-status==1.85.3 protobuf==7.36.2
        googleapis-common-protos==1.76.0 pytest==9.2.0 iniconfig==2.3.1 packaging==26.4
        pluggy==1.7.0 pygments==2.21.0 typing-extensions==4.16.0"
    NPM_PINS="ts-proto@2.18.0 @grpc/grpc-js@1.14.7 @bufbuild/protobuf@2.17.0 typescript@5.9.3
        @types/node@20.19.43 protobufjs@7.6.6 google-proto-files@5.0.3"
    mkdir -p "$TESSERA_CLIENTS_DIR"
    # Each install records its pins; a change of pins installs afresh.
    # shellcheck disable=SC2086 # unquoted: one line, single spaces
    pins() { echo $1; }
    if [ "$(cat "$TESSERA_CLIENTS_DIR/venv/pins" 2>/dev/null)" != "$(pins "$PIP_PINS")" ]; then
        rm -rf "$TESSERA_CLIENTS_DIR/venv"
        python3 -m venv "$TESSERA_CLIENTS_DIR/venv"
        # shellcheck disable=SC2086 # one word per pin
        "$TESSERA_CLIENTS_DIR/venv/bin/pip" install -q --disable-pip-version-check $PIP_PINS >&2
        pins "$PIP_PINS" >"$TESSERA_CLIENTS_DIR/venv/pins"
    fi
    if [ "$(cat "$TESSERA_CLIENTS_DIR/node/pins" 2>/dev/null)" != "$(pins "$NPM_PINS")" ]; then
        rm -rf "$TESSERA_CLIENTS_DIR/node"
        mkdir -p "$TESSERA_CLIENTS_DIR/node"
        # shellcheck disable=SC2086 # one word per pin
        npm install --silent --no-audit --no-fund --save-exact --prefix "$TESSERA_CLIENTS_DIR/node" $NPM_PINS >&2
        pins "$NPM_PINS" >"$TESSERA_CLIENTS_DIR/node/pins"
    fi
    clients_link="$(dirname "${BASH_SOURCE[0]}")/../clients/node/node_modules"
    if [ -d "$clients_link" ] && [ ! -L "$clients_link" ]; then
        echo "clients.sh: clients/node/node_modules is a directory; remove it (the packages live in $TESSERA_CLIENTS_DIR)" >&2
        exit 1
    fi
    ln -sfn "$TESSERA_CLIENTS_DIR/node/node_modules" "$clients_link"
    export TESSERA_CLIENTS_DIR
    export PATH="$TESSERA_CLIENTS_DIR/venv/bin:$TESSERA_CLIENTS_DIR/node/node_modules/.bin:$PATH"
    for v in PATH TESSERA_CLIENTS_DIR; do printf 'export %s=%q\n' "$v" "${!v}"; done >&3
)
# shellcheck source=scripts/hand-back.sh
source "$(dirname "${BASH_SOURCE[0]}")/hand-back.sh" || { return 1 2>/dev/null || exit 1; }
