# The operator's image: one static binary on an empty filesystem, run as 65532:65532 (the
# chart's securityContext), nothing written at run time (readOnlyRootFilesystem holds).
#
#   docker build -t ghcr.io/citycloud/citycloud-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# `make image` builds the same final stage without Docker: it compiles the binary on the host
# and passes it in with ROOTFS=prebuilt (context: target/image/context/operator, holding
# rootfs/citycloud-operator). The stages not selected by ROOTFS are skipped (BuildKit,
# buildah), so that path needs no Rust image.
#
# x86_64 only: the binary is built for x86_64-unknown-linux-gnu.
ARG ROOTFS=compiled
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# +crt-static with an explicit --target gives a static-pie binary while build scripts and
# proc-macros stay dynamic (without --target the flag would apply to them too, and fail).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
      --target x86_64-unknown-linux-gnu -p citycloud-operator \
 && mkdir /rootfs \
 && cp target/x86_64-unknown-linux-gnu/release/citycloud-operator /rootfs/ \
 && strip /rootfs/citycloud-operator

FROM scratch AS compiled
COPY --from=builder /rootfs/ /

FROM scratch AS prebuilt
COPY rootfs/ /

FROM ${ROOTFS}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/citycloud/citycloud-operator
# release: the static binary alone; debug (make image IMAGE_PROFILE=debug): the test build's
# binary with the shared libraries it loads, for integration tests only.
ARG PROFILE=release
LABEL org.opencontainers.image.title="citycloud-operator" \
      org.opencontainers.image.description="CityCloud: isolated hosting for every agency of a city, wired to its shared services" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="CityCloud" \
      io.citycloud.image.profile="${PROFILE}"
USER 65532:65532
ENTRYPOINT ["/citycloud-operator"]
# The chart's Deployment passes the same: args: ["run"].
CMD ["run"]
