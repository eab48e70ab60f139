# syntax=docker/dockerfile:1
# Tessera: the release binary in a small, non-root image. No compiler in the
# final stage. Build: docker build -t tessera .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys builds its C library with cmake and a C compiler.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p tessera \
    && cp target/release/tessera /usr/local/bin/tessera

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tessera --create-home tessera
COPY --from=build /usr/local/bin/tessera /usr/local/bin/tessera
USER 10001
WORKDIR /var/lib/tessera
ENV TESSERA_DATA_DIR=/var/lib/tessera TESSERA_LOG=info
EXPOSE 50051
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
    CMD ["tessera", "healthcheck", "--endpoint", "http://127.0.0.1:50051"]
ENTRYPOINT ["tessera"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--allow-insecure-listen"]
