# syntax=docker/dockerfile:1
# Tessera: the release binary in a small, non-root image. No compiler in the
# final stage. Build (the commit goes into `tessera --version`; .dockerignore
# keeps .git, target/ and every secret out of the build):
#   docker build --build-arg TESSERA_COMMIT=$(git rev-parse --short HEAD) -t tessera .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys builds its C library with cmake and a C compiler.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
ARG TESSERA_COMMIT=
ENV TESSERA_COMMIT=$TESSERA_COMMIT
RUN cargo build --release --locked -p tessera \
    && cp target/release/tessera /usr/local/bin/tessera

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tessera --create-home tessera \
    && chmod 0700 /var/lib/tessera
COPY --from=build /usr/local/bin/tessera /usr/local/bin/tessera
USER 10001
WORKDIR /var/lib/tessera
ENV TESSERA_DATA_DIR=/var/lib/tessera TESSERA_LOG=info
# The embedded store, its KEK and issuer files: keep them across containers.
VOLUME ["/var/lib/tessera"]
EXPOSE 50051
# The health check reads the same variables as the server: a TLS deployment
# sets TESSERA_ENDPOINT=https://127.0.0.1:50051 and TESSERA_PEER_CA_FILE
# (the CA of its certificate), and TESSERA_SERVICE_KEY_FILE when its
# callers file admits only known callers.
ENV TESSERA_ENDPOINT=http://127.0.0.1:50051
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
    CMD ["tessera", "healthcheck"]
ENTRYPOINT ["tessera"]
# Safe by default: off loopback the server refuses to start, naming the
# fix, until it has TLS (TESSERA_TLS_CERT, TESSERA_TLS_KEY), a callers file
# (TESSERA_CALLERS_FILE) and an issuer (TESSERA_ISSUER); compose.yaml sets
# them all.
CMD ["serve", "--listen", "0.0.0.0:50051"]
