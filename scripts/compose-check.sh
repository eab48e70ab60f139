#!/usr/bin/env bash
# compose.yaml and the Dockerfile, checked.
#
#   scripts/compose-check.sh mounts [DIR]
#       DIR/compose.yaml (default: this repository's) is valid and every
#       file it mounts exists (its secrets' files and its bind mounts'
#       sources, which `docker-compose config` alone does not check); else
#       it names the missing ones and exits 1.
#   scripts/compose-check.sh
#       CI's checks: hadolint on the Dockerfile; in a fresh directory with
#       compose.yaml and examples/ but no deploy/, the mount check fails,
#       and passes once scripts/compose-setup.sh has made deploy/; the
#       secrets the containers read (kek, tls/server.key, keys/issuer.key,
#       keys/introspection.key) are readable by their uid (10001) and by
#       nobody else but their owner, with the set-up run as root (owner
#       10001, 0600) and as an unprivileged user (0600 and an ACL entry),
#       and without working ACLs the set-up fails naming the fixes. The
#       permission checks switch users, so they need root.
set -euo pipefail
start=$(pwd)
cd "$(dirname "$0")/.."
repo=$(pwd)

fail() { echo "compose-check: $*" >&2; exit 1; }

if ! command -v docker-compose >/dev/null || ! command -v hadolint >/dev/null ||
    ! python3 -c 'import yaml' 2>/dev/null; then
    source scripts/tools.sh
fi

# mounts DIR: DIR/compose.yaml is valid and what it mounts exists.
mounts() {
    docker-compose -f "$1/compose.yaml" config -q
    # The resolved file (absolute paths): secrets' `file`, and the bind
    # mounts of every service (profiles included), short or long syntax.
    docker-compose -f "$1/compose.yaml" config | python3 -c '
import os, sys, yaml
where, config = sys.argv[1], yaml.safe_load(sys.stdin)
paths = {s["file"] for s in (config.get("secrets") or {}).values() if "file" in s}
for service in (config.get("services") or {}).values():
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") == "bind":
                paths.add(v["source"])
        elif v.split(":")[0].startswith(("/", ".", "~")):
            paths.add(v.split(":")[0])
missing = sorted(os.path.relpath(p, where) for p in paths if not os.path.exists(os.path.expanduser(p)))
if missing:
    hint = "\nrun scripts/compose-setup.sh first (it makes ./deploy)" if any(
        m.startswith("deploy" + os.sep) for m in missing) else ""
    sys.exit("compose-check: compose.yaml mounts files that do not exist:\n  " + "\n  ".join(missing) + hint)
print(f"compose-check: compose.yaml is valid and the {len(paths)} files it mounts exist")
' "$1"
}

if [ "${1:-}" = mounts ]; then
    mounts "$(cd "$start" && cd "${2:-$repo}" && pwd)"
    exit 0
fi
[ $# = 0 ] || fail "usage: scripts/compose-check.sh [mounts [DIR]]"

hadolint Dockerfile
echo "compose-check: hadolint Dockerfile: ok"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0711 "$work"

# The image's default, as the image runs it (its ENTRYPOINT and CMD, its
# ENV, an empty volume) with the binary built here: it refuses to start
# open, naming all it lacks, before it makes anything in the volume.
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/tessera"
[ -x "$bin" ] || cargo build --locked -q -p tessera
mapfile -t image < <(python3 - Dockerfile "$work/volume" <<'EOF'
import json, shlex, sys
env, argv = [], []
for line in open(sys.argv[1]):
    if line.startswith("ENV "):
        env += [kv for kv in shlex.split(line[4:]) if not kv.startswith("TESSERA_DATA_DIR=")]
    elif line.startswith(("ENTRYPOINT ", "CMD ")):
        words = json.loads(line.split(" ", 1)[1])
        argv = words if line.startswith("ENTRYPOINT") else argv[:1] + words
print("\n".join(env + ["TESSERA_DATA_DIR=" + sys.argv[2], "--"] + argv[1:]))
EOF
)
for i in "${!image[@]}"; do [ "${image[$i]}" = -- ] && split=$i; done
if (cd "$work" && timeout 20 env -i PATH="$PATH" "${image[@]:0:split}" "$bin" "${image[@]:split+1}") >/dev/null 2>"$work/default.err"; then
    fail "the image's default command started: ${image[*]:split+1}"
fi
missing=$(grep -o 'missing: [^;]*' "$work/default.err" || true)
for needed in --tls-cert --callers-file --issuer; do
    [[ "$missing" == *"$needed"* ]] ||
        fail "the image's default refusal does not name $needed: $(cat "$work/default.err")"
done
[ ! -e "$work/volume" ] || fail "the image's default command wrote into its volume before refusing"
echo "compose-check: the image's default (tessera ${image[*]:split+1}) refuses to start open, naming TLS, a callers file and an issuer"
# A deployment directory: compose.yaml and what it mounts from the repository.
fresh() {
    mkdir "$work/$1"
    chmod 0711 "$work/$1"
    cp compose.yaml "$work/$1/"
    cp -R examples "$work/$1/"
}

fresh as-root
if mounts "$work/as-root" 2>"$work/err" >/dev/null; then
    fail "the mount check passed without deploy/"
fi
if ! grep -q '^  deploy/kek$' "$work/err" || ! grep -q 'run scripts/compose-setup.sh first' "$work/err"; then
    fail "the mount check without deploy/ did not name deploy/kek and the fix: $(cat "$work/err")"
fi
echo "compose-check: without deploy/ the mount check fails, naming $(grep -c '^  ' "$work/err") missing files"
scripts/compose-setup.sh "$work/as-root/deploy" >/dev/null
mounts "$work/as-root"

if [ "$(id -u)" != 0 ]; then
    echo "compose-check: not root: the permission checks (they switch users) are skipped"
    exit 0
fi
container_secrets="kek tls/server.key keys/issuer.key keys/introspection.key"

# FILE is readable by uid 10001 and not by another uid in the file's group.
only_10001_reads() {
    setpriv --reuid 10001 --regid 10001 --clear-groups cat "$1" >/dev/null 2>&1 ||
        fail "uid 10001 (the containers' user) cannot read $1"
    if setpriv --reuid 10002 --regid "$(stat -c %g "$1")" --clear-groups cat "$1" >/dev/null 2>&1; then
        fail "uid 10002 can read $1"
    fi
}

for f in $container_secrets; do
    [ "$(stat -c '%u %a' "$work/as-root/deploy/$f")" = "10001 600" ] ||
        fail "as root, compose-setup.sh left $f $(stat -c 'owned by %u, mode %a' "$work/as-root/deploy/$f"), not 10001 and 0600"
    only_10001_reads "$work/as-root/deploy/$f"
done
for f in keys/app.key keys/gateway.key tls/ca.key; do
    [ "$(stat -c '%u %a' "$work/as-root/deploy/$f")" = "0 600" ] || fail "as root, $f is not root's and 0600"
done
echo "compose-check: set up as root: the containers' secrets are 10001's, 0600; the other keys root's, 0600"

if ! command -v runuser >/dev/null; then
    echo "compose-check: runuser is missing: the set-up as an unprivileged user is not checked"
    exit 0
fi
if ! command -v setfacl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq acl >/dev/null
fi
# The set-up as `nobody`, in a directory it owns, with a copy of the script
# it can read.
fresh as-user
chown nobody "$work/as-user"
install -m 0755 scripts/compose-setup.sh "$work/compose-setup.sh"
(cd "$work/as-user" && runuser -u nobody -- bash "$work/compose-setup.sh" deploy >/dev/null)
mounts "$work/as-user" >/dev/null
for f in $container_secrets; do
    path="$work/as-user/deploy/$f"
    [ "$(stat -c %U "$path")" = nobody ] || fail "as nobody, $f is not nobody's"
    getfacl -cp "$path" 2>/dev/null | grep -qx 'user:10001:r--' || fail "as nobody, $f has no ACL entry for uid 10001"
    only_10001_reads "$path"
done
for f in keys/app.key keys/gateway.key; do
    [ "$(stat -c '%U %a' "$work/as-user/deploy/$f")" = "nobody 600" ] || fail "as nobody, $f is not nobody's and 0600"
done
# Without working ACLs (a setfacl that fails, as on a filesystem without
# them) the set-up stops and names both fixes.
mkdir "$work/bin"
printf '#!/bin/sh\necho "setfacl: Operation not supported" >&2\nexit 1\n' >"$work/bin/setfacl"
chmod 0755 "$work/bin" "$work/bin/setfacl"
if (cd "$work/as-user" && runuser -u nobody -- env PATH="$work/bin:$PATH" \
    bash "$work/compose-setup.sh" deploy-no-acl >/dev/null 2>"$work/err"); then
    fail "as nobody without ACLs, compose-setup.sh succeeded"
fi
if ! grep -q 'apt-get install acl' "$work/err" || ! grep -q 'sudo' "$work/err"; then
    fail "as nobody without ACLs, compose-setup.sh did not name the fixes: $(cat "$work/err")"
fi
echo "compose-check: set up as an unprivileged user: the containers' secrets are 0600 with an ACL entry" \
    "for uid 10001 and unreadable by others; without ACLs the set-up fails naming the acl package and sudo"
