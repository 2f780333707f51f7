#!/usr/bin/env bash
# Installs the node's Debian packages (pins.env) when any is missing or at another version.
# Idempotent: a no-op (one dpkg-query) when everything is in place. Needs root (apt-get).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pins.env
. "$here/pins.env"
missing=()
for spec in $NODE_DEBS; do
  pkg=${spec%%=*}
  want=${spec#*=}
  [ "$want" = "$spec" ] && want=
  have=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$pkg" 2>/dev/null || true)
  case "$have" in
    "ii "*) [ -z "$want" ] || [ "${have#ii }" = "$want" ] || missing+=("$spec") ;;
    *) missing+=("$spec") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing the node's packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Other sessions may hold the dpkg lock for a while: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get install -y --no-install-recommends "${missing[@]}" >&2 || {
  apt_get update >&2
  apt_get install -y --no-install-recommends "${missing[@]}" >&2 || {
    # Debian's security archive keeps only the newest build of a package: when a pinned
    # version is gone, take the release's current one (same upstream series) and say so.
    echo "warning: a pinned node package version is no longer served; installing the current ones: ${missing[*]%%=*}" >&2
    apt_get install -y --no-install-recommends "${missing[@]%%=*}" >&2
  }
}
