#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go modules pinned in this folder and
# caches them outside the repository, keyed by the pins, so a fresh clone reuses them and a
# version bump rebuilds. Prints the directory holding `kube` and `helm`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CITYCLOUD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citycloud}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

key_of() { cat "$@" | sha256sum | cut -c1-12; }
mod_version() { awk -v m="$2" '{for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v/) {print $(i+1); exit}}' "$1"; }

k8s=$(mod_version "$here/go.mod" k8s.io/kubernetes)
helm=$(mod_version "$here/helm/go.mod" helm.sh/helm/v3)
kube_dir="$cache/kube-$k8s-$(key_of "$here/go.mod" "$here/go.sum" "$here"/*.go)"
helm_dir="$cache/helm-$helm-$(key_of "$here/helm/go.mod" "$here/helm/go.sum")"
# Keyed by both builds: worktrees with different pins or sources never share (and flip) links.
bin="$cache/bin-${kube_dir##*/}-${helm_dir##*/}"

if [ ! -x "$kube_dir/kube" ]; then
  echo "building kube-apiserver, kube-controller-manager and etcd $k8s (cold: 10-25 min)" >&2
  start=$(date +%s)
  mkdir -p "$kube_dir"
  minor=${k8s#v1.}; minor=${minor%%.*}
  v=k8s.io/component-base/version
  (cd "$here" && go build -trimpath -o "$kube_dir/kube.tmp" \
    -ldflags "-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" .)
  mv "$kube_dir/kube.tmp" "$kube_dir/kube"
  echo "built kube in $(( $(date +%s) - start ))s" >&2
fi
if [ ! -x "$helm_dir/helm" ]; then
  echo "building helm $helm" >&2
  start=$(date +%s)
  mkdir -p "$helm_dir"
  (cd "$here/helm" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm" \
    -o "$helm_dir/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$helm_dir/helm.tmp" "$helm_dir/helm"
  echo "built helm in $(( $(date +%s) - start ))s" >&2
fi
mkdir -p "$bin"
ln -sf "$kube_dir/kube" "$bin/kube"
ln -sf "$helm_dir/helm" "$bin/helm"
echo "$bin"
