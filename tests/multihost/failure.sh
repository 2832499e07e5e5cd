#!/usr/bin/env bash
# Failures across namespace hosts (run inside scripts/multihost.sh with 2 or more hosts): in
# the middle of a BurstAttention job one rank on the last host is killed (kill), stopped with
# SIGSTOP (stop), or that host's link goes down (link). The job must end by itself, well
# before mpirun's hard timeout, with a non-zero exit and a message naming what failed, and
# leave nothing running.
#   failure.sh BURST kill|stop|link
set -u
here=$(dirname "$(readlink -f "$0")")
source "$here/lib.sh"
burst=$1
mode=$2
# Burst's own deadline: the stopped rank and the unreachable host are found by it.
export BURST_TIMEOUT=8
readonly kBound=45  # seconds from the failure to the end of the job
host="mhp-h$((MULTIHOST_HOSTS - 1))"
victim=$((MULTIHOST_RANKS - MULTIHOST_SLOTS))  # first rank on the last host
log="$out_dir/failure-$mode.log"

# A job of several seconds: causal zigzag BurstAttention, forward and backward, repeated.
"$MULTIHOST" mpirun -x BURST_TIMEOUT "$burst" run --strategy burst --seqlen 6144 --heads 4 --head-dim 64 --causal \
  --layout zigzag --backward --repeat 20 --threads 1 > "$log" 2>&1 &
job=$!

pid=
for ((i = 0; i < 150; i++)); do
  pid=$("$MULTIHOST" pid-of-rank "$victim" burst) && break
  sleep 0.2
done
if [ -z "$pid" ]; then
  wait "$job"
  bad "rank $victim never started" "$(cat "$log")"
  finish
fi
sleep 2  # into the ring
kill -0 "$job" 2>/dev/null || { bad "the job ended before the failure was injected" "$(cat "$log")"; finish; }
start=$(date +%s.%N)
case "$mode" in
  kill) kill -KILL "$pid"; what="rank $victim (pid $pid on $host) killed" ;;
  stop) kill -STOP "$pid"; what="rank $victim (pid $pid on $host) stopped" ;;
  link) "$MULTIHOST" link-down "$host"; what="link of $host down" ;;
  *) echo "failure.sh: unknown mode '$mode' (kill, stop or link)" >&2; exit 2 ;;
esac
echo "multihost: $what"
wait "$job"
rc=$?
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
output=$(cat "$log")
echo "multihost: job ended after ${elapsed}s with exit $rc; its last lines:"
tail -n 12 "$log" | sed 's/^/      /'

if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && awk -v e="$elapsed" -v b="$kBound" 'BEGIN { exit !(e < b) }'; then
  ok "$what: the job failed by itself (exit $rc) after ${elapsed}s"
else
  bad "$what: expected a non-zero exit within ${kBound}s, not a hard timeout; got exit $rc after ${elapsed}s" "$output"
fi
case "$mode" in
  kill) pattern="rank $victim .*on node $host.*signal 9" ;;
  stop) pattern="error: rank [0-9]+ (receiving|sending) .* (from|to) rank $victim .*deadline" ;;
  link) pattern="error: rank [0-9]+ (receiving|sending) .* (from|to) rank [0-9]+ .*deadline|$host" ;;
esac
if grep -qE "$pattern" "$log"; then
  ok "the message names what failed: $(grep -m1 -oE "$pattern" "$log" | head -c 160)"
else
  bad "no message naming what failed (expected /$pattern/)" "$output"
fi
no_leftovers "$what" 20
finish
