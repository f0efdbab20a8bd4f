# syntax=docker/dockerfile:1
#
# Herald gateway image.
#
#   docker build -t herald .
#   docker run --rm -p 8080:8080 \
#     -e HERALD__ENGINE__KIND=redis -e HERALD__ENGINE__REDIS_URL=redis://redis:6379 \
#     -e HERALD__AUTH__SECRET=change-me-to-at-least-32-bytes-of-secret herald
#
# Web Push: generate a key once (`docker run --rm herald vapid`) and pass
# -e HERALD__PUSH__VAPID_PRIVATE_KEY=... -e HERALD__PUSH__SUBJECT=mailto:you@example.com
#
# The demo (`serve --demo`) refuses a non-loopback listen address, and in a
# container it must listen on 0.0.0.0. Its POST /demo/session gives a token
# for any user to anyone who reaches the port: lift the check only for a
# throwaway demo, never in production, and publish the port on loopback:
#
#   docker run --rm -p 127.0.0.1:8080:8080 -e HERALD__DEMO__ALLOW_PUBLIC=true herald serve --demo
#
# Settings come from environment variables HERALD__SECTION__KEY over the
# defaults built into the binary; for a file, mount it and pass
# `serve --config /etc/herald/herald.toml` (or set HERALD_CONFIG).
# /etc/herald/default.toml is the documented list of every setting.

# ---- build ---------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole context (see .dockerignore): Cargo.toml may name targets outside
# src/ (tests, benches), and cargo needs them all to read the manifest.
COPY . .
# CI compiles the same locked sources (in debug, for its tests). The caches
# keep the registry and target/ between builds; the binary is copied out of
# the cache mount before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald --bin herald \
    && install -D -m 0755 target/release/herald /out/herald

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system's roots, for TLS to Redis and JWKS URLs, which
# this build does not support yet (a JWKS URL or a rediss:// URL is refused
# at start). Web Push needs none: the push services' roots are compiled in
# (webpki-roots).
# curl: only for the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric id, so `runAsNonRoot` / `--user` checks can verify it.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin herald
COPY --from=builder /out/herald /usr/local/bin/herald
COPY config/default.toml /etc/herald/default.toml

# The built-in default (127.0.0.1:8080) would be unreachable from outside the
# container.
ENV HERALD__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 10001:10001
# /healthz: the process is up and its node-wide tick (keep-alives, token
# expiry) runs. Orchestrators should also probe /readyz
# (engine reachable, functions loaded, pub/sub alive) before sending traffic.
# If you change HERALD__SERVER__LISTEN's port, change it here too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
# SIGTERM (docker stop) starts the graceful shutdown: streams get `bye` and
# reconnect elsewhere; allow server.shutdown_timeout (10 s) plus a margin,
# e.g. `docker stop -t 15`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
