#!/usr/bin/env bash
# Makes what compose.yaml mounts, into DIR (default ./deploy), once per
# deployment; nothing here is committed (.gitignore):
#   kek                     the key-encryption key (32 random bytes, base64url)
#   tls/ca.pem, ca.key      a private CA for the services' certificates
#   tls/server.pem, .key    one certificate for every Tessera service name
#   keys/issuer.key         the issuer's service key (Revoke: family, subject, kid)
#   keys/introspection.key  the verifiers' service key (GetJwks, WatchKeys, CompromiseKey)
#   keys/app.key            an application's key (Issue, Refresh, Revoke by jti/family)
#   keys/gateway.key        the gateway's key (gateway = true: forward-auth only)
#   callers.toml            the callers file: SHA-256 hashes of the keys above
# Replace the CA and certificate with your own PKI's in production.
set -euo pipefail
dir=${1:-deploy}
umask 077
mkdir -p "$dir/tls" "$dir/keys"
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
[ -s "$dir/kek" ] || head -c 32 /dev/urandom | b64url >"$dir/kek"

if [ ! -s "$dir/tls/server.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 825 \
        -subj "/CN=Tessera deployment CA" -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.pem" 2>/dev/null
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=tessera" \
        -keyout "$dir/tls/server.key" -out "$dir/tls/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:issuer,DNS:introspection-1,DNS:introspection-2,DNS:localhost,IP:127.0.0.1" \
        "extendedKeyUsage=serverAuth,clientAuth" >"$dir/tls/ext.cnf"
    openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
        -CAcreateserial -days 825 -extfile "$dir/tls/ext.cnf" -out "$dir/tls/server.pem" 2>/dev/null
    rm -f "$dir/tls/server.csr" "$dir/tls/ext.cnf" "$dir/tls/ca.srl"
fi

hash_of() { tr -d '\n' <"$1" | sha256sum | cut -d' ' -f1; }
for who in issuer introspection app gateway; do
    [ -s "$dir/keys/$who.key" ] || { printf 'tsk_'; head -c 32 /dev/urandom | b64url; } >"$dir/keys/$who.key"
done
cat >"$dir/callers.toml" <<TOML
# Made by scripts/compose-setup.sh: only SHA-256 hashes of the service keys.
[[caller]]
id = "tessera-issuer"
key_sha256 = ["$(hash_of "$dir/keys/issuer.key")"]
rpcs = ["Revoke"]
audiences = ["*"]
revoke = ["family", "subject", "kid"]
relay = true

[[caller]]
id = "tessera-introspection"
key_sha256 = ["$(hash_of "$dir/keys/introspection.key")"]
rpcs = ["GetJwks", "WatchKeys", "CompromiseKey"]
relay = true

[[caller]]
id = "app"
key_sha256 = ["$(hash_of "$dir/keys/app.key")"]
rpcs = ["Issue", "Refresh", "Revoke", "Verify"]
audiences = ["orders-api"]
revoke = ["token", "family"]

[[caller]]
id = "gateway"
key_sha256 = ["$(hash_of "$dir/keys/gateway.key")"]
gateway = true
TOML
# Compose bind-mounts secrets with the host's owner, mode and ACL, and the
# Tessera containers run as uid 10001 (the Dockerfile's user). The secrets
# they read are mode 0600 and readable by that uid and nobody else but
# their owner: as root, owned by 10001; otherwise owned by the operator with
# a POSIX ACL entry for 10001 (setfacl, Debian package `acl`). The other
# keys (app, gateway: nginx reads its key as root) stay the operator's, 0600;
# the certificates and the callers file (hashes only) are world-readable.
chmod 0644 "$dir"/callers.toml "$dir"/tls/ca.pem "$dir"/tls/server.pem
chmod 0600 "$dir"/kek "$dir"/tls/server.key "$dir"/keys/*.key
chmod 0711 "$dir" "$dir/tls" "$dir/keys"
for_container=("$dir"/kek "$dir"/tls/server.key "$dir"/keys/issuer.key "$dir"/keys/introspection.key)
if [ "$(id -u)" = 0 ]; then
    chown 10001 "${for_container[@]}"
elif ! command -v setfacl >/dev/null 2>&1 || ! setfacl -m u:10001:r,m::r "${for_container[@]}"; then
    # The ACL's mask (m::r) caps every entry but the owner's at read.
    echo "compose-setup: cannot let the containers (uid 10001) read the secrets in $dir" \
        "(kek, tls/server.key, keys/issuer.key, keys/introspection.key): setfacl is missing" \
        "or the filesystem has no ACLs. Install the acl package" \
        "(apt-get install acl) and run this script again, or run it with sudo" \
        "(it then makes uid 10001 their owner)" >&2
    exit 1
fi
echo "compose-setup: $dir ready (kek, tls/, keys/, callers.toml)"
