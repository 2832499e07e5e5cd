#!/usr/bin/env bash
# Sequence-parallel training under torchrun over gloo (no MPI) with data parallelism on a
# second grid dimension (examples/llama/README.md): one process (the reference), then 4
# ranks = 2 data x 2 sequence, the same seed and batches; writes the comparison, the loss
# plot and each run's train.json. About 8 minutes on 2 cores.
#   examples/llama/run_torchrun.sh [OUT]    (default out/torchrun; after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-out/torchrun}
steps=${STEPS:-300}
seqlen=${SEQLEN:-2048}
export PYTHONPATH=${BUILD_DIR:-build}/python OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
py=/usr/bin/python3
f=examples/llama/torchrun_train.py
mkdir -p "$out"

$py $f --steps "$steps" --seqlen "$seqlen" --batch 2 --out "$out/p1"
# torch 1.13 under Python 3.11 needs --redirects 2 --tee 2 (its defaults fail there).
$py -m torch.distributed.run --nproc_per_node 4 --redirects 2 --tee 2 --master_addr 127.0.0.1 \
    --master_port "${MASTER_PORT:-29531}" $f --data-parallel 2 --steps "$steps" --seqlen "$seqlen" --batch 2 \
    --out "$out/p4"
$py examples/llama/fidelity.py report "$out/p1" "$out/p4" --plot "$out/loss.svg" | tee "$out/report.md"
