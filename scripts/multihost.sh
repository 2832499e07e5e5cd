#!/usr/bin/env bash
# Several MPI hosts on one machine. Each host is a network namespace with its own hostname and
# address on a private subnet (10.200.0.0/24) behind one bridge; Open MPI launches ranks into
# them through a local launcher instead of ssh. Everything runs inside a throwaway sandbox
# (new mount, network, PID and UTS namespaces): when it ends, every process, namespace, link
# and file it made is gone, even after a crash. No default route exists, so no packet leaves
# the test subnet. docs/multihost.md has the design and the measured behaviour.
#
#   scripts/multihost.sh [--hosts N] [--slots L] [--rate RATE] [--delay MS] [--timeout S] -- COMMAND [ARGS...]
#
# --hosts N      hosts mhp-h0 .. mhp-h(N-1) (default 2), --slots L ranks per host (default 2)
# --rate RATE    each host's link to the switch, both directions (tc tbf: 1gbit, 300mbit, ...)
# --delay MS     extra one-way latency per link (needs netem; said and skipped where missing)
# --timeout S    hard limit of every mpirun started through "$MULTIHOST" mpirun (default 120)
#
# COMMAND runs in the sandbox (outside the hosts) with these helpers:
#   "$MULTIHOST" mpirun ARGS...     mpirun in host 0 across all hosts (hostfile: L slots each),
#                                   under `timeout -k 5 S`; ranks r*L .. r*L+L-1 on host r
#   "$MULTIHOST" exec HOST CMD...   CMD inside HOST (its network and hostname)
#   "$MULTIHOST" link-down HOST     unplugs HOST's link (its switch port goes down)
#   "$MULTIHOST" pid-of-rank R NAME prints the pid of MPI rank R of program NAME, if running
#   "$MULTIHOST" leftovers          lists mpirun, orted and Burst processes still running
# and MULTIHOST_HOSTS, MULTIHOST_SLOTS, MULTIHOST_RANKS (N * L) in the environment.
#
# Exit status: COMMAND's; 77 (ctest's skip code here) when this machine cannot create the
# namespaces (no CAP_SYS_ADMIN / CAP_NET_ADMIN, no unshare or ip): the stage is skipped.
set -uo pipefail

self=$(readlink -f "$0")
readonly kSkip=77
readonly kSubnet=10.200.0
readonly kPrefix=mhp

skip() {
  echo "multihost: SKIP: $*" >&2
  exit "$kSkip"
}

host_index() {
  case "$1" in
    "$kPrefix"-h[0-9]*) echo "${1#"$kPrefix"-h}" ;;
    *) echo "multihost: no host named '$1' (expected $kPrefix-h0 .. $kPrefix-h$((MULTIHOST_HOSTS - 1)))" >&2; return 2 ;;
  esac
}

# Runs CMD in HOST's network namespace and in a UTS namespace of its own named HOST. Every
# step execs the next, so a signal to this process reaches CMD itself (a shell left in between
# would take a timeout's signal and leave CMD running).
exec_in_host() {
  local host=$1
  shift
  exec ip netns exec "$host" unshare --uts -- /bin/sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

case "${1:-}" in
  agent)
    # Open MPI's launcher (plm_rsh_agent) in place of ssh: `agent HOST COMMAND...`, where
    # COMMAND is the daemon's command line for a remote shell. The daemon's own environment
    # is this one (inherited from mpirun), as if the remote shell had started it.
    shift
    host=$1
    shift
    exec_in_host "$host" /bin/sh -c "exec $*"
    ;;
  exec)
    shift
    exec_in_host "$@"
    ;;
  mpirun)
    shift
    dir=${MULTIHOST_DIR:?multihost: mpirun is a helper inside scripts/multihost.sh}
    # Through scripts/mpirun.sh, as a user's job across hosts: it adds the flags for root,
    # oversubscription and yielding, and binds TCP (the ranks' transport and the daemons'
    # channel) to the network BURST_MPI_NETWORK names, the test subnet (one host: shared
    # memory only). Daemons' keepalives notice a host whose link died in about 5 s (2 s idle,
    # then 3 probes 1 s apart) instead of hanging; btl_tcp_links 2 keeps both directions of a
    # shaped link at full rate when two ranks exchange at once.
    exec timeout -k 5 "$MULTIHOST_TIMEOUT" \
      ip netns exec "$kPrefix-h0" unshare --uts -- /bin/sh -c 'hostname "$0" && exec "$@"' "$kPrefix-h0" \
      env BURST_MPI_NETWORK="$kSubnet.0/24" "$(dirname "$self")/mpirun.sh" --hostfile "$dir/hostfile" -np "$MULTIHOST_RANKS" \
      --mca plm_rsh_agent "$self agent" --mca plm_rsh_no_tree_spawn 1 \
      --mca btl_tcp_links 2 \
      --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 "$@"
    ;;
  link-down)
    i=$(host_index "$2") || exit 2
    exec ip -n "$kPrefix-sw" link set "p$i" down
    ;;
  pid-of-rank)
    for p in /proc/[0-9]*; do
      [ "$(cat "$p/comm" 2>/dev/null)" = "$3" ] || continue
      if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
        echo "${p#/proc/}"
        exit 0
      fi
    done
    exit 1
    ;;
  leftovers)
    # The sandbox has its own PID namespace: only its own processes are listed.
    ps -e -o pid=,stat=,comm= | awk '$3 ~ /^(mpirun|orted|burst|mh_topology)$/'
    exit 0
    ;;
esac

hosts=2
slots=2
rate=
delay=
timeout_s=120
inside=
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --inside) inside=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "multihost: unknown option '$1' (see the top of $self)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "multihost: no command given (usage at the top of $self)" >&2; exit 2; }
[[ "$hosts" =~ ^[1-9][0-9]?$ && "$hosts" -le 64 ]] || { echo "multihost: --hosts must be 1..64, got '$hosts'" >&2; exit 2; }
[[ "$slots" =~ ^[1-9][0-9]*$ ]] || { echo "multihost: --slots must be a positive integer, got '$slots'" >&2; exit 2; }
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || { echo "multihost: --timeout must be a positive integer, got '$timeout_s'" >&2; exit 2; }

if [ -z "$inside" ]; then
  # Outside: check that this machine can make the sandbox, then re-run this script in it.
  for tool in unshare ip tc timeout mpirun; do
    command -v "$tool" > /dev/null || skip "'$tool' is not installed (scripts/install-deps.sh installs it)"
  done
  # A veth pair in a throwaway network namespace: needs both capabilities.
  probe=$(unshare --mount --net --pid --uts --fork --kill-child -- \
    ip link add mhp-probe type veth peer name mhp-probe1 2>&1) ||
    skip "cannot create namespaces and virtual links here (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): ${probe:-unshare failed}"
  work=$(mktemp -d /tmp/multihost.XXXXXX)
  unshare --mount --net --pid --uts --fork --kill-child --mount-proc -- \
    "$self" --inside "$work" --hosts "$hosts" --slots "$slots" --rate "$rate" --delay "$delay" --timeout "$timeout_s" -- "$@" &
  sandbox=$!
  trap 'kill -KILL "$sandbox" 2>/dev/null' TERM INT HUP
  wait "$sandbox"
  rc=$?
  # The sandbox's mounts went with it: what is left is the empty mount point.
  rm -rf "$work"
  exit "$rc"
fi

# Inside the sandbox: PID 1 of its PID namespace, so everything started here dies with it.
set -e
work=$inside
mount -t tmpfs -o size=1g,mode=0700 multihost "$work"
mkdir -p "$work/tmp" /run/netns
mount -t tmpfs -o size=1m multihost-netns /run/netns
mount -t tmpfs multihost-shm /dev/shm
hostname "$kPrefix-sandbox"
ip link set lo up
cp /etc/hosts "$work/hosts"
ip netns add "$kPrefix-sw"
ip -n "$kPrefix-sw" link set lo up
ip -n "$kPrefix-sw" link add br0 type bridge
ip -n "$kPrefix-sw" link set br0 up
: > "$work/hostfile"
for ((i = 0; i < hosts; i++)); do
  h="$kPrefix-h$i"
  ip netns add "$h"
  ip link add eth0 netns "$h" type veth peer name "p$i" netns "$kPrefix-sw"
  ip -n "$h" link set lo up
  ip -n "$h" addr add "$kSubnet.$((10 + i))/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$kPrefix-sw" link set "p$i" master br0
  ip -n "$kPrefix-sw" link set "p$i" up
  echo "$kSubnet.$((10 + i)) $h" >> "$work/hosts"
  echo "$h slots=$slots" >> "$work/hostfile"
done
mount --bind "$work/hosts" /etc/hosts

# Shaping: a token bucket on both ends of every host's link (the host's egress and the
# switch port towards it), so each host has RATE up and RATE down. Intra-host traffic goes
# through shared memory and is not shaped.
shape() {  # NETNS DEV
  local qdisc=()
  if [ -n "$delay" ]; then
    qdisc=(netem delay "${delay}ms")
    [ -n "$rate" ] && qdisc+=(rate "$rate")
  elif [ -n "$rate" ]; then
    qdisc=(tbf rate "$rate" burst 256kb latency 50ms)
  else
    return 0
  fi
  tc -n "$1" qdisc replace dev "$2" root "${qdisc[@]}"
}
if [ -n "$delay" ] && ! tc -n "$kPrefix-sw" qdisc replace dev br0 root netem delay 1ms 2> /dev/null; then
  echo "multihost: --delay $delay: this kernel has no netem qdisc; links get no added latency" >&2
  delay=
fi
[ -n "$delay" ] && tc -n "$kPrefix-sw" qdisc del dev br0 root
for ((i = 0; i < hosts; i++)); do
  shape "$kPrefix-h$i" eth0
  shape "$kPrefix-sw" "p$i"
done
echo "multihost: $hosts hosts x $slots slots (${kSubnet}.10..$((10 + hosts - 1)))${rate:+, links $rate}${delay:+, +${delay} ms}; mpirun timeout ${timeout_s}s" >&2

set +e
export MULTIHOST="$self" MULTIHOST_DIR="$work" MULTIHOST_TIMEOUT="$timeout_s"
export MULTIHOST_HOSTS="$hosts" MULTIHOST_SLOTS="$slots" MULTIHOST_RANKS=$((hosts * slots))
export TMPDIR="$work/tmp"
"$@"
