#!/usr/bin/env bash
# Clusters of 16-64 ranks on this machine by compute emulation (docs/emulation.md): in-process
# ranks whose attention kernels wait for a model's time instead of computing, over emulated
# links shaped like 8-GPU nodes, with `burst plan`'s prediction for each run beside it.
#   scripts/emulate-bench.sh [-o NAME] [--ranks "32 64"] [--seqlens "131072 524288"]
#                            [--gbps "100 25"] [--nics "8 1"] [--strategies "burst burst-dr usp ulysses"]
#                            [--scale K] [--report]
# The scaled cluster (every rate divided by K, default 1600, so FLOP per byte stays an A100
# node's while this machine's memory copies keep up with the links):
#   compute   A100 attention 160 TFLOP/s forward, 120 backward (the planner's preset)
#   nodes     8 ranks; --gbps G: inter-node Gbit/s per NIC; --nics N: NICs per node (8: one
#             per GPU, GPUDirect; 1: one NIC shared by the node's 8 ranks), 10 us per message
#   intra     NVLink, 200 GB/s per rank
# The problem: causal, zigzag, bf16, 64 heads x d = 2 (FLOPs and bytes depend on heads x d
# only, and 64 heads let Ulysses split over 64 ranks), forward and backward, one repeat.
# Writes out/NAME/<ranks>-<seqlen>-<gbps>g-<nics>nic-<strategy>.{json,txt,plan.json} and the
# table out/NAME.md (NAME: emulate-bench). --report only rebuilds the table.
set -uo pipefail
cd "$(dirname "$0")/.."

name=emulate-bench
ranks_list="32 64"
seqlens="131072 524288"
gbps_list="100 25"
nics_list="8 1"
strategies="burst burst-dr usp ulysses"
scale=1600
report_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    -o) name=$2; shift 2 ;;
    --ranks) ranks_list=$2; shift 2 ;;
    --seqlens) seqlens=$2; shift 2 ;;
    --gbps) gbps_list=$2; shift 2 ;;
    --nics) nics_list=$2; shift 2 ;;
    --strategies) strategies=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --report) report_only=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | grep '^#'; exit 0 ;;
    *) echo "emulate-bench: unknown option '$1' (see the top of $0)" >&2; exit 2 ;;
  esac
done
BURST=${BURST:-build/bin/burst}
dir="out/$name"
mkdir -p "$dir"
per_node=8
heads=64
head_dim=2
# Scaled rates (awk: floating point).
fwd=$(awk -v k="$scale" 'BEGIN { printf "%.6g", 160e3 / k }')      # GFLOP/s
bwd=$(awk -v k="$scale" 'BEGIN { printf "%.6g", 120e3 / k }')
intra=$(awk -v k="$scale" 'BEGIN { printf "%.6g", 200 * 8 / k }')  # Gbit/s

run_one() {  # ranks seqlen gbps nics strategy
  local p=$1 s=$2 g=$3 nics=$4 strategy=$5
  local tag="$p-$s-${g}g-${nics}nic-$strategy" link extra=()
  link=$(awk -v g="$g" -v k="$scale" 'BEGIN { printf "%.6g", g / k }')
  case "$strategy" in
    burst-dr) extra=(--strategy burst --double-ring) ;;
    usp) extra=(--strategy usp --ulysses-degree "$per_node") ;;
    *) extra=(--strategy "$strategy") ;;
  esac
  echo "emulate-bench: $tag (uptime: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$BURST" run "${extra[@]}" --ranks "$p" --ranks-per-node "$per_node" --seqlen "$s" --heads "$heads" \
    --head-dim "$head_dim" --dtype bf16 --causal --layout zigzag --backward --repeat 1 --threads 1 \
    --emulate-compute "$fwd,$bwd" --link-gbps "$link" --intra-gbps "$intra" --nics-per-node "$nics" \
    --link-latency-us 10 --intra-latency-us 10 \
    --timeout 3600 --progress off --json "$dir/$tag.json" > "$dir/$tag.txt" 2>&1 ||
    echo "emulate-bench: $tag failed (see $dir/$tag.txt)" >&2
  # The planner on the same scaled cluster: the same NICs per node.
  local plan_strategy=$strategy
  [ "$strategy" = burst-dr ] && plan_strategy=burst-double
  "$BURST" plan --cluster 8xA100-PCIe --model custom --heads "$heads" --head-dim "$head_dim" --layers 1 \
    --scope core --dtype bf16 --causal --backward --seqlen "$s" --ranks "$p" --nodes $((p / per_node)) \
    --flops "${fwd}G,${bwd}G" --link-gbps "$link" --nics-per-node "$nics" --intra-gbps "$intra" --latency-us 10 \
    --strategy "$plan_strategy" \
    --json "$dir/$tag.plan.json" > /dev/null 2>&1 || echo "emulate-bench: plan for $tag failed" >&2
}

if [ "$report_only" = 0 ]; then
  for p in $ranks_list; do
    for s in $seqlens; do
      for g in $gbps_list; do
        for nics in $nics_list; do
          for strategy in $strategies; do run_one "$p" "$s" "$g" "$nics" "$strategy"; done
        done
      done
    done
  done
fi

# The table: measured (emulated) against predicted, per pass.
python3 - "$dir" "$scale" > "out/$name.md" <<'PY'
import glob, json, os, sys
d, scale = sys.argv[1], sys.argv[2]
print(f"Emulated runs (rates scaled by 1/{scale}; docs/emulation.md). Times in seconds.\n")
print("| ranks | seqlen | Gbit/s x NICs | strategy | fwd | bwd | total | predicted | error | compute fwd/bwd | exposed fwd/bwd | host | inter-node MB/rank |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = []
for path in sorted(glob.glob(os.path.join(d, "*.json"))):
    if path.endswith(".plan.json"):
        continue
    tag = os.path.basename(path)[:-5]
    p, s, g, nics, strategy = tag.split("-", 4)
    r = json.load(open(path))
    dist = r.get("distributed") or {}
    fwd, bwd = r["forward_seconds"], r.get("backward_seconds") or 0
    pred = None
    try:
        plan = json.load(open(os.path.join(d, tag + ".plan.json")))
        pred = [x for x in plan["results"][0]["strategies"] if x["runs"]][0]["seconds"]
    except Exception:
        pass
    inter = sum(dist.get("forward_bytes_inter_node_by_rank", [0]) + dist.get("backward_bytes_inter_node_by_rank", [0]))
    inter /= max(1, int(p)) * 1e6
    err = f"{100 * (pred - (fwd + bwd)) / (fwd + bwd):+.1f}%" if pred else "-"
    ef, eb = dist.get("forward_exposed_seconds", 0), dist.get("backward_exposed_seconds", 0)
    cf, cb = dist.get("forward_compute_max_seconds", 0), dist.get("backward_compute_max_seconds", 0)
    # What is neither the slowest rank's (emulated) compute nor waiting on transfers: this
    # machine's own work (copies, merges, scheduling dozens of threads on its cores).
    host = (fwd + bwd) - (cf + cb) - (ef + eb)
    rows.append((int(p), int(s), g, nics, strategy, fwd, bwd, pred, err, cf, cb, ef, eb, host, inter))
for (p, s, g, nics, strategy, fwd, bwd, pred, err, cf, cb, ef, eb, host, inter) in sorted(rows):
    pr = f"{pred:.1f}" if pred else "-"
    print(f"| {p} | {s // 1024}K | {g[:-1]} x {nics[:-3]} | {strategy} | {fwd:.1f} | {bwd:.1f} | {fwd + bwd:.1f} | {pr} | {err} | {cf:.1f} / {cb:.1f} | {ef:.1f} / {eb:.1f} | {host:.1f} | {inter:.1f} |")
PY
cat "out/$name.md"
