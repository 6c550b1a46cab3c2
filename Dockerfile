# syntax=docker/dockerfile:1
# imagegen's container images, from one Dockerfile:
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) -t imagegen .
#       the service image (default target): serve, worker, build, validate, rerun;
#       for OpenStack, EC2, ssh and simulated clouds. The Helm chart runs this one.
#   docker build --target qemu -t imagegen:qemu .
#       the same plus QEMU, for the local `type: qemu` cloud (a worker on a host
#       with /dev/kvm; see docs/one-machine.md).

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=trixie

# ---- build: a static binary ----
FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/imagegen ./cmd/imagegen \
 && /out/imagegen version

# ---- base: what every runtime image shares ----
# debian-slim rather than distroless: the HEALTHCHECK needs curl, and the qemu
# target needs Debian's QEMU packages on the same base.
FROM debian:${DEBIAN_RELEASE}-slim AS base
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="imagegen" \
      org.opencontainers.image.description="Builds the same VM image on several clouds from one generator spec" \
      org.opencontainers.image.source="https://github.com/imagegen/imagegen" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 imagegen \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/imagegen --create-home \
      --shell /usr/sbin/nologin imagegen \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/imagegen \
 && install -d -m 0755 /etc/imagegen
# The AWS SDK and gophercloud look in $HOME (~/.aws, ~/.config/openstack).
ENV HOME=/home/imagegen \
    IMAGEGEN_HEALTH_PORT=8080
EXPOSE 8080
# serve answers /healthz on its listen port; a worker only with
# --metrics-listen, so run workers with IMAGEGEN_HEALTH_PORT set to that port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${IMAGEGEN_HEALTH_PORT}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/imagegen"]
CMD ["serve", "--config", "/etc/imagegen/imagegen.yaml"]

# ---- qemu: the service image plus QEMU for the local cloud ----
# Before the default target: the last stage is what a plain `docker build` makes.
FROM base AS qemu
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/imagegen /usr/local/bin/imagegen
# Base and built images live here (the qemu cloud's `dir`); mount a volume.
VOLUME ["/var/lib/imagegen"]
USER 65532:65532

# ---- service (default): serve and worker for the remote clouds ----
FROM base AS service
COPY --from=build /out/imagegen /usr/local/bin/imagegen
USER 65532:65532
