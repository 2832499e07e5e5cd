#!/usr/bin/env bash
# What an MPI job of Burst exposes on the network. On one host its ranks need shared memory
# only, so none of them may listen on a TCP or UDP socket (Open MPI's TCP transport would
# listen on every address); a job across hosts must name the network it may use
# (BURST_MPI_NETWORK), and a malformed name is refused before anything starts.
#   bash tests/faults/network.sh build/bin/burst
source "$(dirname "$0")/lib.sh" "$@"

# no_listeners NAME MPIRUN_ARGS...: runs `$MPIRUN MPIRUN_ARGS -np 2 burst run ...`, watches its
# ranks (the launcher's descendants running $BURST) while it runs, and checks that none holds
# a listening TCP socket or a bound UDP socket (/proc/net/{tcp,tcp6,udp,udp6} against each
# rank's /proc/PID/fd), and that the job passed.
no_listeners() {
  local name=$1
  shift
  "$MPIRUN" "$@" -np 2 "$BURST" run --seqlen 8192 --heads 4 --head-dim 64 --threads 1 --repeat 2 \
    > "$TMP/$name.out" 2>&1 &
  local job=$!
  local watch rc
  watch=$("$PYTHON" - "$job" "$BURST" <<'EOF'
import os, socket, struct, sys, time

launcher, exe = int(sys.argv[1]), os.path.realpath(sys.argv[2])

def address(hex_addr):
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"

def exposed():
    """inode -> 'tcp 0.0.0.0:1024' for listening TCP and any bound UDP socket."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = open(f"/proc/net/{proto}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if proto.startswith("tcp") and f[3] != "0A":  # 0A: LISTEN
                continue
            out[f[9]] = f"{proto} {address(f[1])}"
    return out

def descendants(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    todo, seen = [root], []
    while todo:
        for c in children.get(todo.pop(), []):
            seen.append(c)
            todo.append(c)
    return seen

ranks, found = set(), set()
while os.path.exists(f"/proc/{launcher}") and open(f"/proc/{launcher}/stat").read().split()[2] != "Z":
    sockets = exposed()
    for pid in descendants(launcher):
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != exe:
                continue
            ranks.add(pid)
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    found.add(f"rank pid {pid}: {sockets[target[8:-1]]}")
        except OSError:
            continue  # the process ended meanwhile
    time.sleep(0.1)
print(f"ranks seen: {len(ranks)}")
for f in sorted(found):
    print(f"listening: {f}")
EOF
)
  wait "$job"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    bad "$name: the job failed (exit $rc)" "$(tail -n 8 "$TMP/$name.out")"
  elif [[ $watch != *"ranks seen: 2"* ]]; then
    bad "$name: expected to watch 2 ranks, saw: $watch"
  elif [[ $watch == *listening:* ]]; then
    bad "$name: ranks listen on the network" "$watch"
  else
    ok "$name: 2 ranks, no listening socket"
  fi
}

if ! "$MPIRUN" --version 2>&1 | grep -q "Open MPI"; then
  skip network "the MPI launcher is not Open MPI (MPICH's transport is not configured by scripts/mpirun.sh)"
  finish
  exit
fi

no_listeners single-host-no-hosts-given
no_listeners single-host-localhost -H localhost:2
no_listeners single-host-own-name --host "$(hostname)"
# BURST_MPI_NETWORK is for jobs across hosts; one host still uses shared memory only.
BURST_MPI_NETWORK=10.200.0.0/24 no_listeners single-host-network-named

# Across hosts without a named network: refused before anything starts (the host does not
# exist, so a job that did start would fail differently).
expect multi-host-needs-network 2 "BURST_MPI_NETWORK: a job across hosts" \
  env -u BURST_MPI_NETWORK "$MPIRUN" -H localhost,burst-no-such-host.invalid -np 2 "$BURST" run --seqlen 64
printf 'localhost slots=1\nburst-no-such-host.invalid slots=1\n' > "$TMP/hostfile"
expect multi-host-hostfile-needs-network 2 "BURST_MPI_NETWORK: a job across hosts" \
  env -u BURST_MPI_NETWORK "$MPIRUN" --hostfile "$TMP/hostfile" -np 2 "$BURST" run --seqlen 64
for value in "10.1.0.0/33" "10.1.300.0/24" "eth0;true" "a-name-far-too-long-for-an-interface"; do
  expect "malformed-network-'$value'" 2 "BURST_MPI_NETWORK: expected" \
    env BURST_MPI_NETWORK="$value" "$MPIRUN" -H localhost,burst-no-such-host.invalid -np 2 "$BURST" run --seqlen 64
done
finish
