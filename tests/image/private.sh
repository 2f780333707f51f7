#!/usr/bin/env bash
# private.sh DIR CMD...: runs CMD with the host-wide state the container tools write by
# themselves kept inside DIR: buildah and skopeo record blob metadata in
# /var/lib/containers/cache and network state in /run/containers whatever --root says, and
# spill temporary files into /var/tmp. As root, CMD runs in a private mount namespace where
# /run is an empty tmpfs and /var/lib is DIR/varlib (the tools need nothing else there);
# nothing is mounted on the host and all of it is gone with CMD. Rootless, the tools keep
# that state under $HOME, and CMD runs as is.
set -euo pipefail
dir=$1
shift
mkdir -p "$dir/varlib" "$dir/tmp"
export TMPDIR="$dir/tmp"
if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi
# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --propagation private -- bash -euc '
    mount -t tmpfs -o mode=0755 citycloud-image-run /run
    mount --bind "$1" /var/lib
    shift
    exec "$@"' bash "$dir/varlib" "$@"
