#!/usr/bin/env bash
# Exit statuses and ranks that fail or disagree, in-process and under mpirun: one table
# (0 verified, 1 over tolerance, 2 bad input, 3 communication, 4 anything else), every
# length N >= P on every layout, and disagreements named at once instead of after a deadline.
#   ranks.sh path/to/burst
source "$(dirname "$0")/lib.sh" "$@"
s=(--heads 2 --head-dim 32 --threads 1)

# --- exit statuses ------------------------------------------------------------------------
expect "bad argument: exit 2" 2 "--seqlen: expected an integer" "$BURST" run --seqlen abc
# Contiguous causal shards give rank 1 three times rank 0's work: rank 0 waits far past 1 ms.
slow=(--seqlen 8192 --layout contiguous --timeout 0.001 --forward-only)
expect "a deadline on thread ranks: exit 3" 3 "deadline" "$BURST" run "${slow[@]}" "${s[@]}" --ranks 2

# --- short sequences: every N >= P, every layout and strategy -----------------------------
for layout in zigzag contiguous striped; do
  expect "N 5 on 4 thread ranks, $layout: exit 0 at once" 0 "result    ok" \
    timeout 20 "$BURST" run --seqlen 5 --heads 1 --head-dim 16 --ranks 4 --layout "$layout"
  expect "N 13 on 8 thread ranks, $layout: exit 0 at once" 0 "result    ok" \
    timeout 20 "$BURST" run --seqlen 13 --heads 1 --head-dim 16 --ranks 8 --layout "$layout"
done
for strategy in ring allgather ring-rsa; do
  expect "N 5 on 4 thread ranks, $strategy: exit 0" 0 "result    ok" \
    timeout 20 "$BURST" run --seqlen 5 --heads 1 --head-dim 16 --ranks 4 --strategy "$strategy"
done
expect "N 3 on 2 thread ranks, ulysses: exit 0" 0 "result    ok" \
  timeout 20 "$BURST" run --seqlen 3 --heads 2 --head-dim 16 --ranks 2 --strategy ulysses
expect "N 5 on 4 thread ranks, layer: exit 0" 0 "result    ok" \
  timeout 20 "$BURST" run --layer --seqlen 5 --heads 2 --head-dim 16 --ranks 4

# --- under mpirun -------------------------------------------------------------------------
if "$MPIRUN" -np 1 true >/dev/null 2>&1; then
  expect "mpirun: N 5 on 4 ranks: exit 0 at once" 0 "result    ok" \
    timeout 30 "$MPIRUN" -np 4 "$BURST" run --seqlen 5 --heads 1 --head-dim 16
  expect "mpirun: a deadline: exit 3" 3 "deadline" timeout 30 "$MPIRUN" -np 2 "$BURST" run "${slow[@]}" "${s[@]}"
  expect "mpirun: bad argument on one rank: exit 2" 2 "--seqlen: expected an integer" \
    timeout 30 "$MPIRUN" -np 1 "$BURST" run --seqlen 512 "${s[@]}" : -np 1 "$BURST" run --seqlen abc "${s[@]}"
  # Ranks started with different settings: exit 3 within seconds, naming the setting and
  # both values as people read them.
  mpmd() {  # mpmd NAME SUBSTRING ARGS-OF-RANK-1...
    local name=$1 text=$2
    shift 2
    expect "mpirun: ranks disagree on $name: exit 3 at once" 3 "$text" \
      timeout 20 "$MPIRUN" -np 1 "$BURST" run --seqlen 512 "${s[@]}" --timeout 60 \
      : -np 1 "$BURST" run --seqlen 512 "${s[@]}" --timeout 60 "$@"
  }
  mpmd "the seed" "ranks disagree: rank 1 has seed 2 but rank 0 has 0" --seed 2
  mpmd "the strategy" "rank 1 has strategy ring but rank 0 has burst" --strategy ring
  mpmd "the passes" "rank 1 has passes forward only (--forward-only) but rank 0 has forward and backward" --forward-only
  mpmd "the layout" "rank 1 has layout striped but rank 0 has zigzag" --layout striped
  mpmd "the scale" "rank 1 has scale 0.5 but rank 0 has 1/sqrt(head_dim)" --scale 0.5
  mpmd "the dtype" "rank 1 has dtype bf16 but rank 0 has fp32" --dtype bf16
  # The same shapes from different files: only the contents differ.
  "$PYTHON" - "$TMP" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(5)
for name in ("q", "k", "v"):
    x = rng.standard_normal((1, 64, 2, 16), dtype=np.float32)
    np.save(f"{d}/{name}.npy", x)
    x[0, 7, 1, 3] += 1.0
    np.save(f"{d}/{name}2.npy", x)
PY
  expect "mpirun: ranks disagree on the input files' contents: exit 3" 3 \
    "hash of the global inputs" \
    timeout 20 "$MPIRUN" -np 1 "$BURST" run --q "$TMP/q.npy" --k "$TMP/k.npy" --v "$TMP/v.npy" --threads 1 \
    : -np 1 "$BURST" run --q "$TMP/q2.npy" --k "$TMP/k.npy" --v "$TMP/v.npy" --threads 1
  expect "mpirun: ranks disagree in the layer: exit 3" 3 "rank 1 has seed 3 but rank 0 has 0" \
    timeout 20 "$MPIRUN" -np 1 "$BURST" run --layer --seqlen 64 "${s[@]}" \
    : -np 1 "$BURST" run --layer --seqlen 64 "${s[@]}" --seed 3
else
  skip "mpirun cases" "mpirun cannot start here"
fi
finish
