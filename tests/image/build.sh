#!/usr/bin/env bash
# The project's images without a Docker daemon (buildah, chroot isolation, private storage).
#
#   build.sh tools              install buildah skopeo umoci runc jq with apt-get when missing
#   build.sh operator release   static release binary → the Dockerfile's final stage →
#                               target/image/citycloud-operator.tar, tagged as the chart's default
#                               (ghcr.io/citycloud/citycloud-operator:<Chart appVersion>)
#   build.sh operator debug     the same image (same name and tag) from the test build's
#                               dynamically linked target/debug/citycloud-operator (less its
#                               debug info) plus the exact shared libraries it loads (ldd), for
#                               integration tests on a node:
#                               no second compile (IMAGE_BINARY=<path>: pack that build instead)
#                               → target/image/citycloud-operator-debug.tar
#   build.sh probe              static citycloud-probe → target/image/citycloud-probe.tar
#                               (localhost/citycloud-probe:<workspace version>)
#
# The archives are OCI archives: `ctr -n k8s.io images import`, `skopeo copy oci-archive:...`,
# `buildah push` and `podman load` read them. buildah's storage is a scratch directory under
# target/image/buildah, removed after each build: nothing outside the repository's target/ is
# written (except the packages `tools` installs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${CITYCLOUD_IMAGE_DIR:-$ROOT/target/image}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TRIPLE=x86_64-unknown-linux-gnu
CARGO="${CARGO:-cargo}"

log() { printf '%s\n' "$*" >&2; }
die() { log "build.sh: $*"; exit 1; }

tools() {
    local missing=()
    command -v buildah > /dev/null || missing+=(buildah)
    command -v skopeo > /dev/null || missing+=(skopeo)
    command -v umoci > /dev/null || missing+=(umoci)
    command -v runc > /dev/null || missing+=(runc)
    command -v jq > /dev/null || missing+=(jq)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing ${missing[*]} with apt-get"
    # Another build may be installing at the same moment: wait for dpkg's lock, do not fail.
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" > /dev/null
}

# The chart's appVersion: the tag its Deployment pulls by default.
app_version() {
    sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' charts/citycloud-operator/Chart.yaml
}

# [workspace.package] version: what `citycloud-operator version` prints.
crate_version() {
    sed -n '/^\[workspace.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' Cargo.toml
}

# Image timestamps from the last commit, so an unchanged binary gives an identical image.
epoch() {
    git log -1 --format=%ct 2> /dev/null || echo "${SOURCE_DATE_EPOCH:-0}"
}

revision() {
    git rev-parse HEAD 2> /dev/null || echo unknown
}

# Builds $context with $containerfile into $image and writes it to $archive, all in a scratch
# storage directory removed afterwards (vfs: no mounts to leak; the images are small), and the
# tools' host-wide state kept in it too (private.sh).
bud() {
    # Whoever calls (make, a node test packing the image it runs), the tools are there first.
    tools
    local store="$OUT/buildah"
    rm -rf "$store"
    mkdir -p "$store"
    local start=$SECONDS
    "$ROOT/tests/image/private.sh" "$store" "$ROOT/tests/image/build.sh" _bud "$store" "$@"
    rm -rf "$store"
    log "$3 → ${4#"$ROOT"/} ($(du -h "$4" | cut -f1), packed in $((SECONDS - start)) s)"
}

_bud() {
    local store=$1 containerfile=$2 context=$3 image=$4 archive=$5
    shift 5
    local buildah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    # Our own trust policy: nothing is pulled (scratch only) and the push goes to a local file,
    # so the host's /etc/containers/policy.json (absent on bare machines) is not needed.
    local policy="$ROOT/tests/image/policy.json"
    "${buildah[@]}" bud --quiet --isolation chroot --squash --identity-label=false \
        --signature-policy "$policy" --timestamp "$(epoch)" \
        -f "$containerfile" -t "$image" "$@" "$context" > /dev/null
    rm -f "$archive"
    "${buildah[@]}" push --quiet --signature-policy "$policy" "$image" "oci-archive:$archive:$image"
    "${buildah[@]}" rmi --all > /dev/null
}

# Fails unless $1 is a static binary: a dynamic one would not start in a scratch image.
require_static() {
    if ! LC_ALL=C ldd "$1" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
        die "$1 is dynamically linked: see the RUSTFLAGS in tests/image/build.sh"
    fi
}

# Copies the dynamic binary $1 and every library it loads (the loader included) into the
# rootfs $2 at the paths the loader looks them up by. The binary loses its DWARF debug info
# (symbols stay: backtraces still name functions): a debug build is ~135 MB with it, ~50 MB
# without, and packing and importing the image take half the time (the node tests wait on both).
pack_dynamic() {
    local bin=$1 rootfs=$2
    strip --strip-debug -o "$rootfs/citycloud-operator" "$bin"
    local ldd libs
    ldd=$(LC_ALL=C ldd "$bin")
    if grep -q 'not found' <<< "$ldd"; then
        die "$bin needs libraries this machine lacks: $ldd"
    fi
    libs=$(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<< "$ldd")
    [ -n "$libs" ] || die "ldd found no libraries in $bin"
    local lib
    for lib in $libs; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
}

operator() {
    local profile=${1:-release}
    local version
    version=$(app_version)
    [ -n "$version" ] || die "no appVersion in charts/citycloud-operator/Chart.yaml"
    # The tag must tell the truth about the binary inside.
    [ "$version" = "$(crate_version)" ] ||
        die "Chart appVersion $version differs from the workspace version $(crate_version): bump both"
    local image="ghcr.io/citycloud/citycloud-operator:$version"
    local context="$OUT/context/operator"
    rm -rf "$context"
    mkdir -p "$context/rootfs"
    local start=$SECONDS
    case "$profile" in
        release)
            # An explicit --target keeps build scripts and proc-macros dynamic; its own
            # target/x86_64-unknown-linux-gnu/release shares nothing with `cargo build --release`.
            RUSTFLAGS='-C target-feature=+crt-static' "$CARGO" build --release --locked \
                --target "$TRIPLE" -p citycloud-operator
            local bin="$TARGET_DIR/$TRIPLE/release/citycloud-operator"
            require_static "$bin"
            cp "$bin" "$context/rootfs/citycloud-operator"
            strip "$context/rootfs/citycloud-operator"
            ;;
        debug)
            if [ -n "${IMAGE_BINARY:-}" ]; then
                # Any dynamically linked build of the CLI, e.g. the test crate's own copy
                # ($CARGO_BIN_EXE_operator-under-test): nothing to compile at all.
                pack_dynamic "$IMAGE_BINARY" "$context/rootfs"
            else
                # The binary `cargo test --workspace` already built: usually nothing to compile.
                "$CARGO" build -p citycloud-operator --bin citycloud-operator
                pack_dynamic "$TARGET_DIR/debug/citycloud-operator" "$context/rootfs"
            fi
            ;;
        *) die "unknown profile $profile (release or debug)" ;;
    esac
    log "citycloud-operator ($profile) ready in $((SECONDS - start)) s"
    mkdir -p "$OUT"
    # The debug image has the same name and tag (the chart installs it unchanged) but its own
    # archive, so it is never published by mistake.
    local archive="$OUT/citycloud-operator.tar"
    [ "$profile" = release ] || archive="$OUT/citycloud-operator-$profile.tar"
    bud "$ROOT/Dockerfile" "$context" "$image" "$archive" \
        --build-arg ROOTFS=prebuilt --build-arg PROFILE="$profile" \
        --build-arg VERSION="$version" --build-arg REVISION="$(revision)"
}

probe() {
    local version
    version=$(crate_version)
    local context="$OUT/context/probe"
    rm -rf "$context"
    mkdir -p "$context"
    local start=$SECONDS
    RUSTFLAGS='-C target-feature=+crt-static' "$CARGO" build --release --locked \
        --target "$TRIPLE" -p citycloud-probe
    local bin="$TARGET_DIR/$TRIPLE/release/citycloud-probe"
    require_static "$bin"
    cp "$bin" "$context/citycloud-probe"
    strip "$context/citycloud-probe"
    log "citycloud-probe ready in $((SECONDS - start)) s"
    mkdir -p "$OUT"
    bud "$ROOT/tests/probe/Containerfile" "$context" "localhost/citycloud-probe:$version" \
        "$OUT/citycloud-probe.tar" --build-arg VERSION="$version"
}

case "${1:-}" in
    tools) tools ;;
    operator) operator "${2:-release}" ;;
    probe) probe ;;
    _bud) shift; _bud "$@" ;;
    *) die "usage: build.sh tools | operator [release|debug] | probe" ;;
esac
