#!/usr/bin/env bash
# The memory estimate is `burst run`'s out-of-memory guard, so it must never be below what
# the run allocates, and no more than 10% above (else it refuses runs that fit): for every
# strategy, both backward schemes, fp32 and bf16, forward-only and forward + backward, MHA
# and GQA, several lengths and 2-4 in-process ranks, the layer too, it checks
#   1.0 <= memory_estimate_mb / peak_alloc_mb <= 1.1
# from `burst run --json` (peak_alloc_mb: Burst's own allocations, memory_stats().peak, over
# the whole process). And the estimate reads the shapes of --q/--k/--v and --x files, not the
# size flags' defaults: a 190-token problem from files runs rather than being refused.
#   bash tests/faults/memory.sh build/bin/burst
source "$(dirname "$0")/lib.sh" "$@"

# ratio NAME ARGS...: runs `burst run ARGS` and checks the estimate against the measured peak.
ratio() {
  local name=$1
  shift
  local json=$TMP/$name.json out rc
  out=$(timeout -k 5 120 "$BURST" run --threads 1 --json "$json" "$@" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    bad "$name (exit $rc): burst run $*" "$(tail -n 5 <<<"$out")"
    return
  fi
  local verdict
  verdict=$("$PYTHON" - "$json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
est, peak = j["memory_estimate_mb"], j["peak_alloc_mb"]
r = est / peak
print(f"{'ok' if 1.0 <= r <= 1.1 else 'out'} estimate {est:.2f} MB / measured {peak:.2f} MB = {r:.3f}")
EOF
)
  if [[ $verdict == ok* ]]; then
    ok "$name: ${verdict#ok }"
  else
    bad "$name: ${verdict#out } (expected 1.0 .. 1.1): burst run $*"
  fi
}

# Small problems (h 4, d 64) keep the whole matrix near two minutes on two cores: forward +
# backward from 4096 tokens up, where `burst run` checks the gradients by sampling (below,
# its full double-precision check would take most of the time). Thread ranks need not reach
# their peaks at the same moment while the estimate adds them up, so problems much smaller
# than the kernels' scratch (about 1 MB per rank) would measure below the estimate by more
# than the margin; the layer's collectives keep its ranks in step down to 1024 tokens.
sizes=(--heads 4 --head-dim 64)
gqa=(--heads 4 --kv-heads 2 --head-dim 64)
gqa4=(--heads 8 --kv-heads 4 --head-dim 32)  # kv heads divisible by 4 ranks (ulysses)
for s in burst ring allgather ulysses usp ring-rsa; do
  extra=()
  [ "$s" = usp ] && extra=(--ulysses-degree 2)
  ranks=2
  [ "$s" = usp ] && ranks=4
  ratio "$s-fp32-fwdbwd-mha-4096-p$ranks" --strategy "$s" --ranks "$ranks" --seqlen 4096 "${sizes[@]}" "${extra[@]}"
  ratio "$s-bf16-fwd-gqa-4096-p$ranks" --strategy "$s" --ranks "$ranks" --seqlen 4096 "${gqa[@]}" --dtype bf16 \
    --forward-only "${extra[@]}"
  ratio "$s-bf16-fwdbwd-gqa-4096-p$ranks" --strategy "$s" --ranks "$ranks" --seqlen 4096 "${gqa[@]}" --dtype bf16 \
    "${extra[@]}"
  [ "$s" = ring-rsa ] && continue  # its score rows grow with N^2: 8192 tokens need GBs
  ratio "$s-fp32-fwdbwd-gqa-8192-p4" --strategy "$s" --ranks 4 --seqlen 8192 "${gqa4[@]}" "${extra[@]}"
done
# Three ranks: unequal shards (zigzag of 4501 tokens), heads not divisible (rings only).
for s in burst ring allgather ring-rsa; do
  ratio "$s-fp32-fwdbwd-mha-4501-p3" --strategy "$s" --ranks 3 --seqlen 4501 --heads 3 --head-dim 64
done
ratio burst-q-fp32-fwdbwd-gqa-4096-p2 --strategy burst --bwd-scheme q --ranks 2 --seqlen 4096 "${gqa[@]}"
ratio burst-kv-fp32-fwdbwd-mha-4096-p2 --strategy burst --bwd-scheme kv --ranks 2 --seqlen 4096 "${sizes[@]}"
ratio burst-kv-bf16-fwdbwd-mha-4096-p4 --strategy burst --bwd-scheme kv --ranks 4 --seqlen 4096 "${sizes[@]}" --dtype bf16
ratio burst-q-wire-bf16-fp32-fwdbwd-4096-p2 --strategy burst --bwd-scheme q --grad-wire bf16 --ranks 2 --seqlen 4096 \
  "${sizes[@]}" --no-causal
ratio burst-double-ring-fp32-fwdbwd-4096-p4 --strategy burst --double-ring --ranks-per-node 2 --ranks 4 --seqlen 4096 \
  "${sizes[@]}"
ratio local-fp32-fwdbwd-mha-4096 --strategy local --seqlen 4096 "${sizes[@]}"
ratio local-bf16-fwd-gqa-8192 --strategy local --seqlen 8192 "${gqa[@]}" --dtype bf16 --forward-only

# The attention layer: every strategy, tensor parallelism included.
for s in local burst ring allgather ulysses usp ring-rsa tp-v1 tp-v3; do
  ranks=(--ranks 2)
  [ "$s" = local ] && ranks=()
  extra=()
  [ "$s" = usp ] && extra=(--ulysses-degree 2) && ranks=(--ranks 4)
  ratio "layer-$s-fp32-fwdbwd-1024" --layer --strategy "$s" "${ranks[@]}" --seqlen 1024 "${sizes[@]}" "${extra[@]}"
  ratio "layer-$s-bf16-fwd-gqa-2048" --layer --strategy "$s" "${ranks[@]}" --seqlen 2048 "${gqa[@]}" --dtype bf16 \
    --forward-only "${extra[@]}"
done

# Shapes from files: the estimate must describe the files' problem, not --seqlen's default.
if "$PYTHON" - "$TMP" <<'EOF'
import sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
for name, shape in [("q", (1, 190, 4, 64)), ("k", (1, 190, 2, 64)), ("v", (1, 190, 2, 64)),
                    ("q2", (1, 4096, 4, 64)), ("k2", (1, 4096, 4, 64)), ("v2", (1, 4096, 4, 64))]:
    np.save(f"{d}/{name}.npy", rng.standard_normal(shape, dtype=np.float32))
np.save(f"{d}/x.npy", rng.standard_normal((1, 1536, 256), dtype=np.float32))
EOF
then
  files=(--q "$TMP/q.npy" --k "$TMP/k.npy" --v "$TMP/v.npy")
  expect files-190-tokens-ring-rsa-runs 0 "result    ok" "$BURST" run --strategy ring-rsa --ranks 2 --threads 1 "${files[@]}"
  expect files-190-tokens-estimate-from-files 0 "result    ok" "$BURST" run --strategy burst --ranks 2 --threads 1 \
    --max-memory 1000000000 "${files[@]}"
  ratio files-ring-rsa-190 --strategy ring-rsa --ranks 2 "${files[@]}"
  ratio files-ring-fp32-fwdbwd-4096 --strategy ring --ranks 2 --q "$TMP/q2.npy" --k "$TMP/k2.npy" --v "$TMP/v2.npy"
  ratio files-layer-burst-x-1536 --layer --strategy burst --ranks 2 --heads 4 --head-dim 64 --x "$TMP/x.npy"
else
  bad "files: numpy could not write the inputs ($PYTHON)"
fi
finish
