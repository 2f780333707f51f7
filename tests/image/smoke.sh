#!/usr/bin/env bash
# Runs the built images under runc as a kubelet would run the chart's pod: user 65532, read-only
# root filesystem, no capabilities, private namespaces (network included: nothing reaches the
# host's network).
#   - operator image (target/image/citycloud-operator.tar; with the argument `debug`,
#     citycloud-operator-debug.tar): `--help` and `version` (the version must be the tag's);
#   - probe image (target/image/citycloud-probe.tar): `serve` in one container, `get` from a
#     second one joined to its network namespace (loopback), a refused `get`, `resolve`.
# Needs root (runc), skopeo, umoci, runc, jq (`tests/image/build.sh tools`). Every container is
# deleted and the scratch directory removed on exit, also on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${CITYCLOUD_IMAGE_DIR:-$ROOT/target/image}"
# skopeo's host-wide state goes to a scratch directory too (see private.sh).
if [ -z "${CITYCLOUD_SMOKE_PRIVATE:-}" ]; then
    scratch="$OUT/smoke-private-$$"
    status=0
    CITYCLOUD_SMOKE_PRIVATE=1 "$ROOT/tests/image/private.sh" "$scratch" "$ROOT/tests/image/smoke.sh" "$@" || status=$?
    rm -rf "$scratch"
    exit "$status"
fi
WORK="$OUT/smoke-$$"
PROFILE="${1:-release}"
RUNC=(runc --root "$WORK/runc")
PREFIX="citycloud-smoke-$$"
STARTED=()

log() { printf '%s\n' "$*" >&2; }
fail() {
    log "FAIL: $*"
    exit 1
}

cleanup() {
    local id
    for id in "${STARTED[@]}"; do
        "${RUNC[@]}" kill "$id" KILL 2> /dev/null || true
        "${RUNC[@]}" delete --force "$id" 2> /dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# unpack ARCHIVE BUNDLE: an OCI runtime bundle of the archive's image, locked down like the
# chart's pod (the image's user is kept: it must be 65532 by itself).
unpack() {
    local archive=$1 bundle=$2
    [ -f "$archive" ] || fail "$archive missing: run make image / make probe-image first"
    local layout
    layout="$WORK/layout-$(basename "$bundle")"
    skopeo copy --quiet "oci-archive:$archive" "oci:$layout:smoke"
    umoci unpack --image "$layout:smoke" "$bundle" > /dev/null
    local user
    user=$(jq -r '"\(.process.user.uid):\(.process.user.gid)"' "$bundle/config.json")
    [ "$user" = "65532:65532" ] || fail "$archive runs as $user, not 65532:65532"
    edit "$bundle" '.process.terminal = false | .root.readonly = true
        | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}'
}

edit() {
    local bundle=$1 filter=$2
    shift 2
    # Extra arguments are jq options (--argjson ...).
    jq "$@" "$filter" "$bundle/config.json" > "$bundle/config.json.new"
    mv "$bundle/config.json.new" "$bundle/config.json"
}

# run BUNDLE NAME ARGS...: runs the image's binary with ARGS in the foreground.
run() {
    local bundle=$1 name=$2
    shift 2
    local args
    args=$(printf '%s\n' "$@" | jq -R . | jq -s .)
    # shellcheck disable=SC2016 # $args is jq's, not the shell's
    edit "$bundle" '.process.args = [.process.args[0]] + $args' --argjson args "$args"
    STARTED+=("$PREFIX-$name")
    "${RUNC[@]}" run --bundle "$bundle" "$PREFIX-$name"
}

mkdir -p "$WORK"

log "operator image:"
version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$ROOT/charts/citycloud-operator/Chart.yaml")
archive="$OUT/citycloud-operator.tar"
[ "$PROFILE" = release ] || archive="$OUT/citycloud-operator-$PROFILE.tar"
unpack "$archive" "$WORK/operator"
help=$(run "$WORK/operator" help --help) || fail "operator --help exited $?"
grep -q '^Usage: citycloud-operator <COMMAND>' <<< "$help" || fail "unexpected --help: $help"
log "  --help: $(head -1 <<< "$help")"
printed=$(run "$WORK/operator" version version) || fail "operator version exited $?"
[ "$printed" = "citycloud-operator $version" ] || fail "version printed '$printed', the tag is $version"
log "  version: $printed"

log "probe image:"
unpack "$OUT/citycloud-probe.tar" "$WORK/server"
edit "$WORK/server" '.process.args = [.process.args[0], "serve", "8080"]
    | .process.env += ["POD_NAMESPACE=smoke", "POD_NAME=server"]'
STARTED+=("$PREFIX-server")
"${RUNC[@]}" run --detach --bundle "$WORK/server" "$PREFIX-server" > "$WORK/server.log" 2>&1
pid=$("${RUNC[@]}" state "$PREFIX-server" | jq -r .pid)
# The client shares the server's rootfs (read-only) and joins its network namespace.
mkdir -p "$WORK/client"
jq --arg rootfs "$WORK/server/rootfs" --arg netns "/proc/$pid/ns/net" \
    '.root.path = $rootfs | .process.env = [.process.env[] | select(startswith("POD_") | not)]
     | .linux.namespaces = [.linux.namespaces[] | if .type == "network" then .path = $netns else . end]' \
    "$WORK/server/config.json" > "$WORK/client/config.json"
body=""
for attempt in $(seq 50); do
    # The server may not listen yet: refused until it does.
    if body=$(run "$WORK/client" "get-$attempt" get 127.0.0.1:8080 2000 2> /dev/null); then
        break
    fi
    sleep 0.1
done
[[ "$body" == "smoke/server 127.0.0.1:"* ]] || fail "get printed '$body'; server log: $(cat "$WORK/server.log")"
log "  get 127.0.0.1:8080 → $body"
if refused=$(run "$WORK/client" refused get 127.0.0.1:8081 2000 2>&1); then
    fail "get on a closed port succeeded: $refused"
fi
[[ "$refused" == "FAIL 127.0.0.1:8081: refused: "* ]] || fail "closed port: '$refused'"
log "  get 127.0.0.1:8081 → $refused"
resolved=$(run "$WORK/client" resolve resolve 127.0.0.1) || fail "resolve exited $?"
[ "$resolved" = "127.0.0.1 -> 127.0.0.1" ] || fail "resolve printed '$resolved'"
log "  resolve → $resolved"
log "images OK"
