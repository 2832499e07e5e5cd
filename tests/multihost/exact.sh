#!/usr/bin/env bash
# Exactness across namespace hosts (run inside scripts/multihost.sh): every strategy, forward
# and backward, over ranks on several hosts (shared memory inside a host, TCP between hosts).
# `burst run` checks itself against the double-precision reference of the whole problem and
# exits 1 over tolerance, so a job's exit status is the verdict.
#   exact.sh BURST
set -u
here=$(dirname "$(readlink -f "$0")")
source "$here/lib.sh"
burst=$1
ranks=$MULTIHOST_RANKS
degree=2
[ $((ranks % 2)) -eq 0 ] || degree=1

# seqlen 8P + 3: unequal shards in every layout; 4 heads divide P = 4 (ulysses, usp).
common=(--seqlen $((8 * ranks * 6 + 3)) --heads 4 --head-dim 32 --causal --layout zigzag --backward --repeat 1 --threads 1)
runs=(
  "burst (single ring)|--strategy burst"
  "burst (double ring)|--strategy burst --double-ring"
  "burst (double ring, GQA, K/V backward)|--strategy burst --double-ring --kv-heads 2 --bwd-scheme kv"
  "ring|--strategy ring"
  "ring-rsa|--strategy ring-rsa"
  "allgather|--strategy allgather"
  "ulysses|--strategy ulysses"
  "usp (Ulysses degree $degree)|--strategy usp --ulysses-degree $degree"
  "layer, burst (double ring)|--layer --strategy burst --double-ring"
  "layer, tp-v3|--layer --strategy tp-v3"
)
for entry in "${runs[@]}"; do
  name=${entry%%|*}
  read -ra flags <<<"${entry#*|}"
  mpi "$name" "$burst" run "${flags[@]}" "${common[@]}"
  if [ "$rc" -eq 0 ] && grep -q "result    ok" <<<"$output"; then
    ok "$name: $(grep -m1 '^result ' <<<"$output" | sed 's/  */ /g')"
  else
    bad "$name (exit $rc)" "$output"
  fi
done

# The check can fail: a run whose own reference check fails must fail here. A tolerance no
# fp32 result meets is not available as a flag, so a deliberately wrong problem stands in:
# ranks that disagree on the sequence length.
mpi "disagreeing ranks" sh -c 'exec "$0" run --strategy burst --seqlen $((96 + OMPI_COMM_WORLD_RANK % 2)) --repeat 1 --threads 1' "$burst"
if [ "$rc" -ne 0 ]; then ok "a run that cannot be right fails (exit $rc)"; else bad "a broken run passed" "$output"; fi
finish
