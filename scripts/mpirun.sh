#!/usr/bin/env bash
# mpirun with the flags this project needs: Open MPI refuses to run as root without the two
# ALLOW variables and more ranks than cores without --oversubscribe, and idle ranks must
# yield the core. MPICH's mpiexec needs none of these and gets none of them.
#   scripts/mpirun.sh -np 4 build/bin/test_comm_mpi
#   BURST_MPI_NETWORK=10.1.0.0/24 scripts/mpirun.sh --hostfile hosts -np 8 build/bin/burst run
#
# Network (Open MPI): its TCP transport makes every rank listen on all addresses, though one
# host needs shared memory only. So:
#   - one host (no -H/--host/--hostfile/--machinefile/--rankfile, no default hostfile, no
#     multi-node allocation, or only this machine's names and addresses): ranks use shared
#     memory alone (`--mca btl self,vader`) and open no listening socket; mpirun's own
#     control channel advertises loopback only (its listener is on all addresses: Open MPI
#     4.1 binds it to the wildcard address whatever it is told);
#   - several hosts: the ranks' transport and the daemons' control channel advertise and
#     connect over only the interfaces or subnets named in BURST_MPI_NETWORK (a comma-separated
#     list such as 10.1.0.0/24 or eth1; btl_tcp_if_include, oob_tcp_if_include). Their
#     listeners stay on the wildcard addresses (Open MPI 4.1 binds them there), so a firewall
#     is what keeps other machines out (README.md, "Network"). A job across hosts without
#     BURST_MPI_NETWORK is refused, unless the command line or the environment sets
#     btl_tcp_if_include itself.
# Flags the caller gives (--mca btl ..., --mca btl_tcp_if_include ...) are never overridden.
set -euo pipefail

fail() {
  echo "mpirun.sh: $*" >&2
  exit 2
}

# By name, not by its path: Open MPI takes a launcher started by absolute path as --prefix
# and prefixes the remote daemons' command lines with PATH settings that a launch agent
# (scripts/multihost.sh) then has to run through a shell.
launcher=mpirun
command -v mpirun > /dev/null || launcher=mpiexec
command -v "$launcher" > /dev/null || fail "no mpirun or mpiexec on PATH (scripts/install-deps.sh installs Open MPI)"
network=${BURST_MPI_NETWORK:-}
if ! "$launcher" --version 2>&1 | grep -q "Open MPI"; then
  # MPICH (hydra) names its interface with -iface itself; a subnet has no equivalent there.
  [ -z "$network" ] || fail "BURST_MPI_NETWORK: applies to Open MPI only, got '$network' with $launcher (MPICH: pass -iface IFACE)"
  exec "$launcher" "$@"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Each item: an IPv4 subnet in CIDR notation or an interface name (what Open MPI's
# *_if_include accept).
if [ -n "$network" ]; then
  IFS=, read -r -a items <<<"$network"
  for item in "${items[@]}"; do
    if [[ $item =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]]; then
      for octet in 1 2 3 4; do
        [ "${BASH_REMATCH[$octet]}" -le 255 ] || fail "BURST_MPI_NETWORK: expected an IPv4 subnet such as 10.1.0.0/24, got '$item'"
      done
      [ "${BASH_REMATCH[5]}" -le 32 ] || fail "BURST_MPI_NETWORK: expected a prefix length 0..32, got '$item'"
    elif ! [[ $item =~ ^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}$ ]]; then
      fail "BURST_MPI_NETWORK: expected comma-separated subnets (10.1.0.0/24) or interface names (eth1), got '$item' in '$network'"
    fi
  done
fi

# The hosts this job may use, from the options before the program (after it, arguments are
# the program's), the default hostfiles and a batch system's allocation.
hosts=()
hostfiles=()
user_btl=${OMPI_MCA_btl:-}
user_if=${OMPI_MCA_btl_tcp_if_include:-}
user_oob=${OMPI_MCA_oob_tcp_if_include:-}
[ -n "${OMPI_MCA_orte_default_hostfile:-}" ] && hostfiles+=("$OMPI_MCA_orte_default_hostfile")
[ -f /etc/openmpi/openmpi-default-hostfile ] && hostfiles+=(/etc/openmpi/openmpi-default-hostfile)
[ -n "${PBS_NODEFILE:-}" ] && hostfiles+=("$PBS_NODEFILE")
multi_node_allocation=0
[ "${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}" -gt 1 ] 2>/dev/null && multi_node_allocation=1
args=("$@")
i=0
while [ "$i" -lt "${#args[@]}" ]; do
  a=${args[$i]}
  next=${args[$((i + 1))]:-}
  case "$a" in
    -H | -host | --host) IFS=, read -r -a more <<<"$next"; hosts+=("${more[@]}"); i=$((i + 2)) ;;
    --host=*) IFS=, read -r -a more <<<"${a#--host=}"; hosts+=("${more[@]}"); i=$((i + 1)) ;;
    -hostfile | --hostfile | -machinefile | --machinefile | -default-hostfile | --default-hostfile | -rf | -rankfile | --rankfile)
      hostfiles+=("$next"); i=$((i + 2)) ;;
    -mca | --mca | -gmca | --gmca)
      case "$next" in
        btl) user_btl=${args[$((i + 2))]:-} ;;
        btl_tcp_if_include) user_if=${args[$((i + 2))]:-} ;;
        oob_tcp_if_include) user_oob=${args[$((i + 2))]:-} ;;
        orte_default_hostfile) hostfiles+=("${args[$((i + 2))]:-}") ;;
      esac
      i=$((i + 3)) ;;
    # Options of Open MPI's mpirun that take a value.
    -np | -n | --np | --n | -c | -N | -npernode | --npernode | -npersocket | --npersocket | --map-by | -map-by | \
      --rank-by | -rank-by | --bind-to | -bind-to | -x | --prefix | -wdir | --wdir | -wd | --path | --app | \
      --output-filename | --timeout | --cpus-per-proc | --cpus-per-rank | --cpu-set | --personality | \
      --preload-files | --stdin | --ompi-server | --tune | --am | --launch-agent | --report-uri | --debugger | \
      --max-vm-size)
      i=$((i + 2)) ;;
    --) break ;;
    -*) i=$((i + 1)) ;;
    *) break ;;  # the program
  esac
done
for file in "${hostfiles[@]}"; do
  [ -r "$file" ] || continue  # mpirun itself reports a hostfile it cannot read
  # Hostfile lines: HOST [slots=N ...]; rankfile lines: rank R=HOST slot=...; # comments.
  while read -r first rest; do
    case "$first" in
      '' | '#'*) ;;
      rank) host=${rest#*=}; hosts+=("${host%% *}") ;;
      *) hosts+=("$first") ;;
    esac
  done < <(sed 's/#.*//' "$file")
done

# Names and addresses of this machine (looked up only when hosts are named).
local_names=" localhost localhost.localdomain ::1 "
if [ "${#hosts[@]}" -gt 0 ]; then
  local_names+="$(hostname 2>/dev/null || true) $(hostname -s 2>/dev/null || true) $(hostname -f 2>/dev/null || true) "
  if command -v ip > /dev/null; then
    local_names+="$(ip -o addr show 2>/dev/null | awk '{ sub("/.*", "", $4); printf "%s ", $4 }')"
  fi
fi
single_host=$((1 - multi_node_allocation))
for h in "${hosts[@]}"; do
  # -H takes HOST:SLOTS; an IPv6 address has several colons and keeps them.
  [[ $h == *:*:* ]] || h=${h%%:*}
  [[ $h == 127.* || $local_names == *" $h "* ]] || single_host=0
done

flags=(--oversubscribe --mca mpi_yield_when_idle 1 --bind-to none)
if [ "$single_host" -eq 1 ]; then
  # Shared memory and the process itself: no TCP transport, so no rank listens anywhere.
  [ -n "$user_btl" ] || flags+=(--mca btl self,vader)
  [ -n "$user_oob" ] || flags+=(--mca oob_tcp_if_include lo)
elif [ -n "$network" ]; then
  [ -n "$user_btl" ] || flags+=(--mca btl self,vader,tcp)
  [ -n "$user_if" ] || flags+=(--mca btl_tcp_if_include "$network")
  [ -n "$user_oob" ] || flags+=(--mca oob_tcp_if_include "$network")
elif [ -z "$user_if" ]; then
  fail "BURST_MPI_NETWORK: a job across hosts (${hosts[*]:-a multi-node allocation}) needs the interface or subnet its ranks may use, e.g. BURST_MPI_NETWORK=10.1.0.0/24 or BURST_MPI_NETWORK=eth1; got none (README.md, 'Network')"
fi
exec "$launcher" "${flags[@]}" "$@"
