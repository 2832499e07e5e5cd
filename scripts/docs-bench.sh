#!/usr/bin/env bash
# Packed documents: the same tokens under document masks and under one causal mask, and the
# parallel efficiency of every layout at P ranks under mpirun (docs/packed-documents.md).
#   scripts/docs-bench.sh [SEQLEN] [DIST] [SEED] [RANKS]
#   (defaults 131072 pretrain 2 2; 8 heads, d = 128, fp32, forward and backward)
# Writes out/docs-bench/*.json and prints a table. BURST_DOCS_BENCH_CAUSAL=0 skips the
# one-causal-mask run (the longest, minutes at 128K); BURST_DOCS_BENCH_REPEAT sets --repeat
# of the packed runs (default 3, medians).
set -euo pipefail
cd "$(dirname "$0")/.."
seqlen=${1:-131072}
dist=${2:-pretrain}
seed=${3:-2}
ranks=${4:-2}
repeat=${BURST_DOCS_BENCH_REPEAT:-3}
out=out/docs-bench
mkdir -p "$out"
rm -f "$out"/*.json
grep -m1 "model name" /proc/cpuinfo
uptime
common=(--seqlen "$seqlen" --heads 8 --head-dim 128 --threads 1 --seed "$seed")
docs=(--doc-dist "$dist")
run() {  # run NAME [mpirun] FLAGS...
  local name=$1
  shift
  echo "== $name" >&2
  if [[ $1 == mpirun ]]; then
    shift
    scripts/mpirun.sh -np "$ranks" build/bin/burst run "${common[@]}" --json "$out/$name.json" "$@" > "$out/$name.txt"
  else
    build/bin/burst run "${common[@]}" --json "$out/$name.json" "$@" > "$out/$name.txt"
  fi
}
# One rank, one thread: the packed problem's serial time (the efficiency's numerator).
run single --strategy local "${docs[@]}" --repeat "$repeat"
for layout in contiguous zigzag doc-zigzag balanced; do
  run "p${ranks}-$layout" mpirun --strategy burst --layout "$layout" "${docs[@]}" --repeat "$repeat"
done
if [[ ${BURST_DOCS_BENCH_CAUSAL:-1} != 0 ]]; then
  run "p${ranks}-causal" mpirun --strategy burst --layout zigzag
fi
uptime
/usr/bin/python3 - "$out" "$ranks" <<'PY'
import json, os, sys
out, ranks = sys.argv[1], int(sys.argv[2])
runs = {os.path.basename(p)[:-5]: json.load(open(os.path.join(out, p))) for p in os.listdir(out) if p.endswith(".json")}
single = runs["single"]
doc = single["documents"]
t1 = single["forward_seconds"] + single["backward_seconds"]
print(f"documents {doc['count']} ({doc['source']}), longest {doc['longest']}, work {doc['work_ratio']:.4f} of one causal mask")
print(f"one rank, 1 thread: forward {single['forward_seconds']:.2f} s, backward {single['backward_seconds']:.2f} s")
print(f"{'run':16} {'fwd s':>8} {'bwd s':>8} {'total s':>8} {'efficiency':>10} {'work max/min':>12} "
      f"{'fwd cmp max/min':>15} {'bwd cmp max/min':>15} {'steps skipped':>13} {'MB sent/rank':>12} {'MB saved/rank':>13}")
for name in sorted(k for k in runs if k != "single"):
    r = runs[name]
    d = r["distributed"]
    total = r["forward_seconds"] + r["backward_seconds"]
    eff = t1 / (ranks * total) if r.get("documents") else float("nan")
    work = d.get("work_pairs_by_rank") or [1]
    spread = lambda xs: max(xs) / min(xs) if min(xs) > 0 else float("inf")
    sent = (d["forward_bytes_sent_per_rank"] + d["backward_bytes_sent_per_rank"]) / 1e6
    saved = (d["forward_bytes_saved_per_rank"] + d["backward_bytes_saved_per_rank"]) / 1e6
    print(f"{name:16} {r['forward_seconds']:8.2f} {r['backward_seconds']:8.2f} {total:8.2f} {eff:10.3f} {spread(work):12.2f} "
          f"{spread(d['forward_compute_seconds_by_rank']):15.2f} {spread(d['backward_compute_seconds_by_rank']):15.2f} "
          f"{d['forward_steps_skipped'] + d['backward_steps_skipped']:13d} {sent:12.1f} {saved:13.1f}")
causal = runs.get(f"p{ranks}-causal")
if causal:
    tc = causal["forward_seconds"] + causal["backward_seconds"]
    best = min((runs[k]["forward_seconds"] + runs[k]["backward_seconds"], k) for k in runs if k.startswith(f"p{ranks}-") and k != f"p{ranks}-causal")
    print(f"one causal mask at P={ranks}: {tc:.1f} s; packed {best[0]:.2f} s ({best[1]}): {tc / best[0]:.1f}x faster, "
          f"work ratio {1 / doc['work_ratio']:.1f}x")
PY
