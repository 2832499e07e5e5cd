#!/usr/bin/env bash
# Runs every distributed strategy on the same problem under mpirun and prints one table
# (time, bytes sent per rank, exposed communication, memory per rank, error against the
# reference); writes out/NAME.json and out/NAME.csv, and each run's report to
# out/NAME/<strategy>.json (NAME: compare, or -o NAME).
#   scripts/compare.sh [-np P] [-o NAME] [burst run options]
#     e.g. scripts/compare.sh -np 2 --seqlen 8192 --causal --layout zigzag
# With --layer the runs are of the whole attention layer and tp-v1, tp-v3 join the table; with
# --block (and --layers L, --mlp-dim F) of transformer blocks, the same strategies, with the
# bytes per rank split into activations (core, layer and MLP collectives) and the weight-gradient
# all-reduce, and a run whose bytes differ from their formulas marked.
# A strategy that cannot run the problem (say, Ulysses with heads not divisible by P) is
# listed as skipped with the command's own error line.
set -uo pipefail
cd "$(dirname "$0")/.."
ranks=2
name=compare
while [ $# -gt 0 ]; do
  case "$1" in
    -np) ranks=$2; shift 2 ;;
    -o) name=$2; shift 2 ;;
    *) break ;;
  esac
done
layer=0
for a in "$@"; do
  [ "$a" = --layer ] && layer=1
  [ "$a" = --block ] && layer=2
done
strategies=(burst ring allgather ulysses ring-rsa usp)
[ "$layer" != 0 ] && strategies+=(tp-v1 tp-v3)
degree=1
[ $((ranks % 2)) -eq 0 ] && degree=2
dir="out/$name"
mkdir -p "$dir"
for strategy in "${strategies[@]}"; do
  extra=()
  [ "$strategy" = usp ] && extra=(--ulysses-degree "$degree")
  echo "compare: $strategy on $ranks ranks" >&2
  if ! scripts/mpirun.sh -np "$ranks" build/bin/burst run --strategy "$strategy" --backward "$@" "${extra[@]}" \
      --json "$dir/$strategy.json" > "$dir/$strategy.txt" 2>&1; then
    grep -m1 -E "burst: (rank [0-9]+: )?error|FAILED|Killed|killed" "$dir/$strategy.txt" > "$dir/$strategy.skipped" \
      || echo "failed (see $dir/$strategy.txt)" > "$dir/$strategy.skipped"
    rm -f "$dir/$strategy.json"
  else
    rm -f "$dir/$strategy.skipped"
  fi
done
/usr/bin/python3 - "$ranks" "$dir" "$layer" "${strategies[@]}" <<'PY'
import csv, json, os, sys
ranks, folder, level, strategies = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
layer, block = level == "1", level == "2"
rows = []
for s in strategies:
    path = f"{folder}/{s}.json"
    if not os.path.exists(path):
        skipped = f"{folder}/{s}.skipped"
        rows.append({"strategy": s, "skipped": open(skipped).read().strip() if os.path.exists(skipped) else "no report"})
        continue
    r = json.load(open(path))
    if block:
        f, b = r["forward"], r["backward"]
        rows.append({"strategy": s, "forward_s": f["seconds"], "backward_s": b["seconds"],
                     "forward_mb_per_rank": f["activation_bytes_sent_per_rank"] / 1e6,
                     "backward_mb_per_rank": b["activation_bytes_sent_per_rank"] / 1e6,
                     "mlp_mb_per_rank": (f["mlp_bytes_sent_per_rank"] + b["mlp_bytes_sent_per_rank"]) / 1e6,
                     "grad_allreduce_mb_per_rank": b["grad_bytes_sent_per_rank"] / 1e6,
                     "inter_node_mb_all_ranks": (sum(f["inter_node_bytes_by_rank"]) + sum(b["inter_node_bytes_by_rank"])) / 1e6,
                     "exposed_forward_s": f["exposed_seconds"], "exposed_backward_s": b["exposed_seconds"],
                     "parameters_mb_per_rank": r["parameters_mb_per_rank"],
                     "saved_activations_mb_per_rank": r["saved_activations_mb_per_rank"],
                     "block_memory_mb_per_rank": r["block_memory_mb_per_rank"],
                     "peak_alloc_mb": r["peak_alloc_mb"], "memory_scope": r["memory_scope"],
                     "max_error": r["y_error"] if r["y_error"] is not None else float("nan"),
                     "bytes_match": r["bytes_match"]})
    elif layer:
        f, b = r["forward"], r["backward"]
        rows.append({"strategy": s, "forward_s": f["seconds"], "backward_s": b["seconds"],
                     "forward_mb_per_rank": f["bytes_sent_per_rank"] / 1e6,
                     "backward_mb_per_rank": (b["attention_bytes_sent_per_rank"] + b["layer_bytes_sent_per_rank"]) / 1e6,
                     "grad_allreduce_mb_per_rank": b["grad_bytes_sent_per_rank"] / 1e6,
                     "exposed_forward_s": f["exposed_seconds"] + f["collective_seconds"],
                     "exposed_backward_s": b["exposed_seconds"] + b["collective_seconds"],
                     "parameters_mb_per_rank": r["parameters_mb_per_rank"],
                     "saved_activations_mb_per_rank": r["saved_activations_mb_per_rank"],
                     "peak_alloc_mb": r["peak_alloc_mb"], "memory_scope": r["memory_scope"], "max_error": r["y_error"]})
    else:
        d = r["distributed"]
        rows.append({"strategy": s, "forward_s": r["forward_seconds"], "backward_s": r["backward_seconds"],
                     "forward_mb_per_rank": d["forward_bytes_sent_per_rank"] / 1e6,
                     "backward_mb_per_rank": d["backward_bytes_sent_per_rank"] / 1e6,
                     "exposed_forward_s": d["forward_exposed_seconds"], "exposed_backward_s": d["backward_exposed_seconds"],
                     "peak_rss_mb": r["peak_rss_mb"], "peak_alloc_mb": r["peak_alloc_mb"], "memory_scope": r["memory_scope"],
                     "max_error": r["max_error"], "backward_scheme": d["backward_scheme"]})
json.dump({"ranks": int(ranks), "layer": layer, "block": block, "results": rows}, open(folder + ".json", "w"), indent=1)
keys = ["strategy", "forward_s", "backward_s", "forward_mb_per_rank", "backward_mb_per_rank", "grad_allreduce_mb_per_rank",
        "exposed_forward_s", "exposed_backward_s", "parameters_mb_per_rank", "saved_activations_mb_per_rank",
        "peak_rss_mb", "peak_alloc_mb", "max_error", "skipped"]
if block:
    keys[6:6] = ["mlp_mb_per_rank", "inter_node_mb_all_ranks"]
    keys[-2:-2] = ["block_memory_mb_per_rank", "bytes_match"]
with open(folder + ".csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for row in rows: w.writerow(row)
if block:
    print(f"| block, {ranks} ranks | fwd s | bwd s | fwd MB/rank | bwd MB/rank | MLP fwd+bwd MB | + weight-grad all-reduce MB | "
          "exposed fwd/bwd s | params MB/rank | saved act. MB/rank | block_memory MB/rank | Burst alloc MB | y error | bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
elif layer:
    print(f"| layer, {ranks} ranks | fwd s | bwd s | fwd MB/rank | bwd MB/rank | + weight-grad all-reduce MB | "
          "exposed fwd/bwd s | params MB/rank | saved act. MB/rank | Burst alloc MB/rank | y error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
else:
    print(f"| strategy ({ranks} ranks) | fwd s | bwd s | fwd MB/rank | bwd MB/rank | exposed fwd/bwd s | peak RSS MB/rank | Burst alloc MB/rank | max error |")
    print("|---|---|---|---|---|---|---|---|---|")
for row in rows:
    if "skipped" in row:
        print(f"| {row['strategy']} | skipped: {row['skipped']} |" + " |" * (12 if block else 9 if layer else 7))
        continue
    common = (f"| {row['strategy']} | {row['forward_s']:.3f} | {row['backward_s']:.3f} | {row['forward_mb_per_rank']:.1f} | "
              f"{row['backward_mb_per_rank']:.1f} | ")
    if block:
        print(common + f"{row['mlp_mb_per_rank']:.1f} | {row['grad_allreduce_mb_per_rank']:.1f} | "
              f"{row['exposed_forward_s']:.3f}/{row['exposed_backward_s']:.3f} | {row['parameters_mb_per_rank']:.1f} | "
              f"{row['saved_activations_mb_per_rank']:.0f} | {row['block_memory_mb_per_rank']:.0f} | "
              f"{row['peak_alloc_mb']:.0f} | {row['max_error']:.1e} | {'ok' if row['bytes_match'] else 'MISMATCH'} |")
    elif layer:
        print(common + f"{row['grad_allreduce_mb_per_rank']:.1f} | {row['exposed_forward_s']:.3f}/{row['exposed_backward_s']:.3f} | "
              f"{row['parameters_mb_per_rank']:.1f} | {row['saved_activations_mb_per_rank']:.0f} | {row['peak_alloc_mb']:.0f} | "
              f"{row['max_error']:.1e} |")
    else:
        print(common + f"{row['exposed_forward_s']:.3f}/{row['exposed_backward_s']:.3f} | {row['peak_rss_mb']:.0f} | "
              f"{row['peak_alloc_mb']:.0f} | {row['max_error']:.1e} |")
print(f"wrote {folder}.json, {folder}.csv")
PY
