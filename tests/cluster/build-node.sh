#!/usr/bin/env bash
# Builds the test bed node's binaries and images and caches them outside the repository, keyed
# by their pins (like build.sh): kubelet, kube-scheduler and kube-proxy from the control plane's
# module set (go.mod here), kube-router from kube-router/go.mod, CoreDNS (the cluster DNS) from
# coredns/go.mod as a static binary packed into an OCI archive, and the pause image (pause.c of
# that k8s.io/kubernetes module, gcc -static) and the traffic probe image (node/probe.c) as OCI
# archives. Prints the folder holding them.
# Debian packages (containerd, runc, CNI plugins, iptables, ipset, gcc) come from node/deps.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CITYCLOUD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citycloud}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# shellcheck source=node/pins.env
. "$here/node/pins.env"
# One run at a time: the node tests start several clusters at once, and two cold runs would
# write the same outputs (and pay a 15-minute build twice).
mkdir -p "$cache"
exec 9> "$cache/.build-node.lock"
flock 9

key_of() { cat "$@" | sha256sum | cut -c1-12; }
mod_version() { awk -v m="$2" '{for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v/) {print $(i+1); exit}}' "$1"; }

k8s=$(mod_version "$here/go.mod" k8s.io/kubernetes)
router=$(mod_version "$here/kube-router/go.mod" github.com/cloudnativelabs/kube-router/v2)
coredns=$(mod_version "$here/coredns/go.mod" github.com/coredns/coredns)
node_dir="$cache/node-$k8s-$(key_of "$here/go.mod" "$here/go.sum")"
router_dir="$cache/kube-router-$router-$(key_of "$here/kube-router/go.mod" "$here/kube-router/go.sum")"
coredns_dir="$cache/coredns-$coredns-$(key_of "$here/coredns/go.mod" "$here/coredns/go.sum" "$here/coredns/main.go" "$here/node/oci-archive.sh")"
pause_dir="$cache/pause-$k8s-$(echo "$PAUSE_IMAGE $PAUSE_VERSION" | key_of - "$here/node/oci-archive.sh")"
probe_dir="$cache/probe-$(echo "$PROBE_IMAGE" | key_of - "$here/node/probe.c" "$here/node/oci-archive.sh")"
# Keyed by every build it links, so worktrees with different pins or sources never share links.
bin="$cache/node-bin-$(echo "$node_dir $router_dir $coredns_dir $pause_dir $probe_dir" | key_of -)"

timed() { # name, command...: runs it, reports the time on stderr
  local name=$1 start; shift
  start=$(date +%s)
  "$@"
  echo "built $name in $(( $(date +%s) - start ))s" >&2
}

minor=${k8s#v1.}; minor=${minor%%.*}
v=k8s.io/component-base/version
for cmd in kubelet kube-scheduler kube-proxy; do
  if [ ! -x "$node_dir/$cmd" ]; then
    echo "building $cmd $k8s (cold: 2-4 min)" >&2
    mkdir -p "$node_dir"
    (cd "$here" && timed "$cmd" go build -trimpath -o "$node_dir/$cmd.tmp" \
      -ldflags "-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
      "k8s.io/kubernetes/cmd/$cmd")
    mv "$node_dir/$cmd.tmp" "$node_dir/$cmd"
  fi
done
if [ ! -x "$router_dir/kube-router" ]; then
  echo "building kube-router $router (cold: ~10 min)" >&2
  mkdir -p "$router_dir"
  (cd "$here/kube-router" && timed kube-router go build -trimpath -o "$router_dir/kube-router.tmp" \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$router" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
  mv "$router_dir/kube-router.tmp" "$router_dir/kube-router"
fi
if [ ! -s "$coredns_dir/coredns.tar" ]; then
  echo "building CoreDNS $coredns (cold: ~5 min)" >&2
  mkdir -p "$coredns_dir"
  (cd "$here/coredns" && timed coredns go build -trimpath -o "$coredns_dir/coredns" \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns" .)
  # The image's name carries the version (node.rs derives it from coredns/go.mod the same way).
  bash "$here/node/oci-archive.sh" "$coredns_dir/coredns.tar.tmp" "localhost/citycloud/coredns:${coredns#v}" \
    /coredns 65532 "$coredns_dir/coredns"
  mv "$coredns_dir/coredns.tar.tmp" "$coredns_dir/coredns.tar"
fi
if [ ! -s "$pause_dir/pause.tar" ]; then
  mkdir -p "$pause_dir"
  src=$(cd "$here" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$pause_dir/pause" "$src"
  strip "$pause_dir/pause"
  bash "$here/node/oci-archive.sh" "$pause_dir/pause.tar.tmp" "$PAUSE_IMAGE" /pause 65535 "$pause_dir/pause"
  mv "$pause_dir/pause.tar.tmp" "$pause_dir/pause.tar"
fi
if [ ! -s "$probe_dir/probe.tar" ]; then
  mkdir -p "$probe_dir"
  gcc -Os -static -o "$probe_dir/probe" "$here/node/probe.c"
  strip "$probe_dir/probe"
  bash "$here/node/oci-archive.sh" "$probe_dir/probe.tar.tmp" "$PROBE_IMAGE" /probe 65532 "$probe_dir/probe"
  mv "$probe_dir/probe.tar.tmp" "$probe_dir/probe.tar"
fi
mkdir -p "$bin"
for cmd in kubelet kube-scheduler kube-proxy; do ln -sf "$node_dir/$cmd" "$bin/$cmd"; done
ln -sf "$router_dir/kube-router" "$bin/kube-router"
ln -sf "$pause_dir/pause.tar" "$bin/pause.tar"
ln -sf "$coredns_dir/coredns.tar" "$bin/coredns.tar"
ln -sf "$probe_dir/probe.tar" "$bin/probe.tar"
echo "$bin"
