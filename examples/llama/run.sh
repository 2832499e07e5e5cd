#!/usr/bin/env bash
# The whole fidelity demonstration (examples/llama/README.md): trains the model on one process
# and sequence-parallel on 2 and 4 MPI ranks, evaluates the single-process weights with every
# strategy and layout, and writes the tables and the loss plot. About 20 minutes on 2 cores.
#   examples/llama/run.sh [OUT]    (default out/fidelity; after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-out/fidelity}
steps=${STEPS:-300}
torch_steps=${TORCH_STEPS:-30}
export PYTHONPATH=${BUILD_DIR:-build}/python OMP_NUM_THREADS=1
py=/usr/bin/python3
f=examples/llama/fidelity.py
mkdir -p "$out"

# Training: Burst on one process, then the same seed sequence-parallel over 2 and 4 ranks.
$py $f train --attention burst --steps "$steps" --out "$out/p1"
scripts/mpirun.sh -np 2 $py $f train --attention burst --layout zigzag --steps "$steps" --out "$out/p2"
scripts/mpirun.sh -np 4 $py $f train --attention burst --layout zigzag --steps "$steps" --out "$out/p4"
# Plain torch attention materialises every score row: ~15x slower here, so fewer steps.
$py $f train --attention torch --steps "$torch_steps" --out "$out/torch"

# Perplexity of the single-process weights on held-out text: torch and Burst on one process,
# then every strategy in every layout on 2 and 4 ranks.
rm -f "$out/eval.jsonl"
$py $f eval --weights "$out/p1/weights.pt" --results "$out/eval.jsonl"
scripts/mpirun.sh -np 2 $py $f eval --weights "$out/p1/weights.pt" --results "$out/eval.jsonl"
scripts/mpirun.sh -np 4 $py $f eval --weights "$out/p1/weights.pt" --results "$out/eval.jsonl"

$py $f report "$out/p1" "$out/p2" "$out/p4" --eval "$out/eval.jsonl" --plot "$out/loss.svg" | tee "$out/report.md"
$py $f report "$out/torch" "$out/p1" "$out/p2" "$out/p4" | tee -a "$out/report.md"
