#!/usr/bin/env bash
# Runs dead_rank under mpirun with 3 ranks (MODE exit or hang) and checks that the job fails
# (non-zero exit) within 60 s with a clear message, instead of hanging. With `hang` only
# Burst's deadline (5 s in dead_rank) can end it: the message must name the rank, the peer
# and the deadline.
#   dead_rank.sh LAUNCHER PROGRAM MODE
set -u
launcher=$1
program=$2
mode=${3:-exit}
start=$(date +%s)
output=$(timeout -k 5 60 "$launcher" -np 3 "$program" "$mode" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$output" | tail -n 20
echo "dead_rank: exit $rc after ${elapsed}s"
fail=0
[ "$rc" -ne 0 ] || { echo "FAIL: the job exited 0"; fail=1; }
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || { echo "FAIL: the job hung until the timeout"; fail=1; }
if [ "$mode" = hang ]; then
  echo "$output" | grep -q "error: rank [02] receiving .* from rank 1 .*deadline" ||
    { echo "FAIL: no deadline error naming the silent peer"; fail=1; }
else
  echo "$output" | grep -q "rank 1 exits" || { echo "FAIL: no message from the exiting rank"; fail=1; }
fi
[ "$fail" -eq 0 ] && echo "dead_rank: 1 passed, 0 failed" || echo "dead_rank: 0 passed, 1 failed"
exit "$fail"
