#!/usr/bin/env bash
# Runs every distributed strategy on the same problem under mpirun and prints one table
# (time, bytes sent per rank, exposed communication, memory per rank, error against the
# reference); writes out/compare.json and out/compare.csv, and each run's report to
# out/compare/<strategy>.json.
#   scripts/compare.sh [-np P] [burst run options]     e.g. scripts/compare.sh -np 2 --seqlen 8192 --causal --layout zigzag
# A strategy that cannot run the problem (say, Ulysses with heads not divisible by P) is
# listed as skipped with the command's own error line.
set -uo pipefail
cd "$(dirname "$0")/.."
ranks=2
if [ "${1:-}" = "-np" ]; then ranks=$2; shift 2; fi
degree=1
[ $((ranks % 2)) -eq 0 ] && degree=2
mkdir -p out/compare
for strategy in burst ring allgather ulysses ring-rsa usp; do
  extra=()
  [ "$strategy" = usp ] && extra=(--ulysses-degree "$degree")
  echo "compare: $strategy on $ranks ranks" >&2
  if ! scripts/mpirun.sh -np "$ranks" build/bin/burst run --strategy "$strategy" --backward "$@" "${extra[@]}" \
      --json "out/compare/$strategy.json" > "out/compare/$strategy.txt" 2>&1; then
    grep -m1 -E "burst: (rank [0-9]+: )?error|FAILED" "out/compare/$strategy.txt" > "out/compare/$strategy.skipped" || echo "failed" > "out/compare/$strategy.skipped"
    rm -f "out/compare/$strategy.json"
  else
    rm -f "out/compare/$strategy.skipped"
  fi
done
/usr/bin/python3 - "$ranks" <<'PY'
import csv, json, os, sys
ranks = sys.argv[1]
rows = []
for s in ("burst", "ring", "allgather", "ulysses", "ring-rsa", "usp"):
    path = f"out/compare/{s}.json"
    if not os.path.exists(path):
        reason = open(f"out/compare/{s}.skipped").read().strip() if os.path.exists(f"out/compare/{s}.skipped") else "no report"
        rows.append({"strategy": s, "skipped": reason})
        continue
    r = json.load(open(path)); d = r["distributed"]
    rows.append({"strategy": s, "forward_s": r["forward_seconds"], "backward_s": r["backward_seconds"],
                 "forward_mb_per_rank": d["forward_bytes_sent_per_rank"] / 1e6,
                 "backward_mb_per_rank": d["backward_bytes_sent_per_rank"] / 1e6,
                 "exposed_forward_s": d["forward_exposed_seconds"], "exposed_backward_s": d["backward_exposed_seconds"],
                 "peak_rss_mb": r["peak_rss_mb"], "peak_alloc_mb": r["peak_alloc_mb"], "memory_scope": r["memory_scope"],
                 "max_error": r["max_error"], "backward_scheme": d["backward_scheme"]})
json.dump({"ranks": int(ranks), "results": rows}, open("out/compare.json", "w"), indent=1)
keys = ["strategy", "forward_s", "backward_s", "forward_mb_per_rank", "backward_mb_per_rank", "exposed_forward_s",
        "exposed_backward_s", "peak_rss_mb", "peak_alloc_mb", "max_error", "skipped"]
with open("out/compare.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for row in rows: w.writerow(row)
print(f"| strategy ({ranks} ranks) | fwd s | bwd s | fwd MB/rank | bwd MB/rank | exposed fwd/bwd s | peak RSS MB/rank | Burst alloc MB/rank | max error |")
print("|---|---|---|---|---|---|---|---|---|")
for row in rows:
    if "skipped" in row:
        print(f"| {row['strategy']} | skipped: {row['skipped']} |||||||| ")
        continue
    print(f"| {row['strategy']} | {row['forward_s']:.3f} | {row['backward_s']:.3f} | {row['forward_mb_per_rank']:.1f} | "
          f"{row['backward_mb_per_rank']:.1f} | {row['exposed_forward_s']:.3f}/{row['exposed_backward_s']:.3f} | "
          f"{row['peak_rss_mb']:.0f} | {row['peak_alloc_mb']:.0f} | {row['max_error']:.1e} |")
print("wrote out/compare.json, out/compare.csv")
PY
