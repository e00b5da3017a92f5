# syntax=docker/dockerfile:1
# The site agent's image (target `agent`, the default) and the simulated
# tank gauge's (target `sim`, for a pilot without a real gauge). From the
# repository's root:
#   docker build -f deploy/docker/agent.Dockerfile -t tankwatch/agent:0.2.0 .
#   docker build -f deploy/docker/agent.Dockerfile --target sim -t tankwatch/atg-sim:0.2.0 .
# Built in Rust's image; run in Debian's slim image as the non-root user
# tankwatch (uid 10001). The configuration is mounted at
# /etc/tankwatch/site.yaml; the log, state and TLS files live in
# /var/lib/tankwatch (a volume: they must survive the container).
# Linted by hadolint (tests/e2e/tests/containers.rs).
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p edge-agent -p atg-sim --bins \
    && install -D -m 0755 target/release/edge-agent /out/edge-agent \
    && install -D -m 0755 target/release/atg-sim /out/atg-sim

FROM debian:bookworm-slim AS base
# the distribution's current ca-certificates and curl (security updates)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tankwatch \
        --shell /usr/sbin/nologin tankwatch \
    && install -d -m 0750 -o tankwatch -g tankwatch /var/lib/tankwatch

FROM base AS sim
COPY --from=build /out/atg-sim /usr/bin/atg-sim
USER 10001:10001
EXPOSE 5020
ENTRYPOINT ["/usr/bin/atg-sim", "--listen", "0.0.0.0:5020"]

FROM base AS agent
COPY --from=build /out/edge-agent /usr/bin/edge-agent
USER 10001:10001
WORKDIR /var/lib/tankwatch
VOLUME ["/var/lib/tankwatch"]
# /status answers while the agent runs (status.listen in site.yaml)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9470/status"]
ENTRYPOINT ["/usr/bin/edge-agent"]
CMD ["run", "--config", "/etc/tankwatch/site.yaml"]
