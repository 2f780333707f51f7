#!/usr/bin/env bash
# The test bed node's namespace plumbing. The node is one network namespace plus one private
# mount namespace, held by a `sleep` the Rust test bed starts as
#   unshare --net --mount --propagation private -- sleep infinity
# Nothing here touches the host's network, sysctls or mounts: every mount is made inside the
# node's mount namespace (gone with it) and every sysctl written is per network namespace.
#   netns.sh setup HOLDER_PID DIR NODE_IP/PREFIX   interfaces, private /run /var/lib /var/log, fake /proc/sys files
#   netns.sh cgroups-up CGROUP                     kubelet's cgroupRoot in every cgroup v1 hierarchy
#   netns.sh pods-down CGROUP                      kill the pods' containers (everything in kubelet's cgroupRoot)
#   netns.sh down HOLDER_PID CGROUP                kill everything in the namespaces and the cgroups, remove them
set -euo pipefail

hierarchies() { # every mounted cgroup hierarchy (v1 controllers, name=systemd, the v2 `unified` mount)
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts
}

cgroup_pids() { # every process in cgroup $1 and below, in any hierarchy
  for h in $(hierarchies); do
    [ -d "$h/$1" ] || continue
    find "$h/$1" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
}

case "${1:-}" in
setup)
  holder=$2 dir=$3 ip=$4
  mkdir -p "$dir/varlib" "$dir/varlog" "$dir/sysctl"
  # kubelet (setupKernelTunables) writes these global sysctls when they differ from what it
  # wants: it reads these files instead, in the node's mount namespace only.
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    echo "${kv#*=}" > "$dir/sysctl/$(echo "${kv%%=*}" | tr / .)"
  done
  nsenter -t "$holder" -n -m -- bash -euo pipefail -c '
    dir=$1 ip=$2
    ip link set lo up
    # A veth pair, both ends inside: kubelet refuses a loopback node IP and this kernel has no
    # dummy interfaces.
    ip link add node0 type veth peer name node0-peer
    ip addr add "$ip" dev node0
    ip link set node0 up
    ip link set node0-peer up
    ip route add default dev node0
    echo 1 > /proc/sys/net/ipv4/ip_forward                     # per network namespace
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount --bind "$dir/varlib" /var/lib
    mount --bind "$dir/varlog" /var/log
    for f in "$dir"/sysctl/*; do
      mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
    done
  ' netns-setup "$dir" "$ip"
  ;;
cgroups-up)
  cg=$2
  for h in $(hierarchies); do
    mkdir -p "$h/$cg"
    # cpuset children start empty: copy the parent's cpus and memory nodes.
    if [ -e "$h/cpuset.cpus" ] && [ -e "$h/$cg/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" > "$h/$cg/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h/$cg/cpuset.mems"
    fi
  done
  ;;
pods-down)
  # Before the control plane stops: a pod's watches (CoreDNS's, the operator's) would hold the
  # API server's graceful shutdown until it is killed. Their shims stay until `down`.
  cg=$2
  for _ in 1 2 3; do
    mapfile -t pids < <(cgroup_pids "$cg")
    [ ${#pids[@]} -eq 0 ] && break
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  ;;
down)
  holder=$2 cg=$3
  netns=$(readlink "/proc/$holder/ns/net" 2>/dev/null || true)
  mntns=$(readlink "/proc/$holder/ns/mnt" 2>/dev/null || true)
  # A holder that is gone (its pid maybe reused) shares our namespaces: never sweep those.
  if [ "$netns" = "$(readlink /proc/self/ns/net)" ] || [ "$mntns" = "$(readlink /proc/self/ns/mnt)" ]; then
    netns= mntns=
  fi
  # Everything still inside: shims and containers (re-parented daemons) and any component
  # that survived its SIGTERM. Until none is left (killing a shim may reveal nothing new).
  for _ in $(seq 10); do
    pids=()
    if [ -n "$netns" ]; then
      # One find, not a readlink per process: -samefile compares the namespaces' inodes.
      while read -r pid; do
        [ "$pid" = "$holder" ] || pids+=("$pid")
      done < <(find -L /proc/[0-9]*/ns -maxdepth 1 \( -name net -samefile "/proc/$holder/ns/net" \
        -o -name mnt -samefile "/proc/$holder/ns/mnt" \) 2>/dev/null | cut -d/ -f3 | sort -u)
    fi
    while read -r pid; do pids+=("$pid"); done < <(cgroup_pids "$cg")
    [ ${#pids[@]} -eq 0 ] && break
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  [ -n "$netns" ] && kill -KILL "$holder" 2>/dev/null || true
  # The cgroups, deepest first; a cgroup whose last process just died may need a moment.
  for _ in $(seq 25); do
    left=0
    for h in $(hierarchies); do
      [ -d "$h/$cg" ] || continue
      find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$h/$cg" ] && left=1
    done
    [ $left -eq 0 ] && break
    sleep 0.1
  done
  for h in $(hierarchies); do
    if [ -d "$h/$cg" ]; then echo "netns.sh: could not remove $h/$cg" >&2; exit 1; fi
  done
  ;;
*)
  echo "usage: netns.sh setup HOLDER_PID DIR NODE_IP/PREFIX | cgroups-up CGROUP | pods-down CGROUP | down HOLDER_PID CGROUP" >&2
  exit 2
  ;;
esac
