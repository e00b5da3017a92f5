# syntax=docker/dockerfile:1
# The headend's image, with tankwatch-pki. From the repository's root:
#   docker build -f deploy/docker/headend.Dockerfile -t tankwatch/headend:0.2.0 .
# Built in Rust's image; run in Debian's slim image as the non-root user
# tankwatch (uid 10001) with its two binaries, curl for the health check
# and the CA roots. Settings are the flags' environment names
# (`headend --help`); the PKI is mounted at /etc/tankwatch/pki (a volume
# or a Kubernetes Secret). Linted by hadolint (tests/e2e/tests/containers.rs).
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p headend -p tankwatch-pki --bins \
    && install -D -m 0755 target/release/headend /out/headend \
    && install -D -m 0755 target/release/pki /out/tankwatch-pki

FROM debian:bookworm-slim
# the distribution's current ca-certificates and curl (security updates)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tankwatch \
        --shell /usr/sbin/nologin tankwatch \
    && install -d -m 0750 -o tankwatch -g tankwatch /var/lib/tankwatch /etc/tankwatch/pki \
    && install -d -m 0755 -o tankwatch -g tankwatch /etc/tankwatch/public
COPY --from=build /out/ /usr/bin/
USER 10001:10001
WORKDIR /var/lib/tankwatch
# REST on every address needs TLS: the headend's own certificate serves it
ENV DATABASE_URL=sqlite:///var/lib/tankwatch/headend.db \
    HEADEND_PKI_DIR=/etc/tankwatch/pki \
    HEADEND_GRPC_LISTEN=0.0.0.0:7443 \
    HEADEND_ENROLL_LISTEN=0.0.0.0:7444 \
    HEADEND_HTTP_LISTEN=0.0.0.0:8080 \
    HEADEND_HTTP_TLS_CERT=/etc/tankwatch/pki/headend.pem \
    HEADEND_HTTP_TLS_KEY=/etc/tankwatch/pki/headend.key
EXPOSE 7443 7444 8080
VOLUME ["/var/lib/tankwatch"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "--cacert", "/etc/tankwatch/pki/ca.pem", "https://127.0.0.1:8080/ready"]
ENTRYPOINT ["/usr/bin/headend"]
