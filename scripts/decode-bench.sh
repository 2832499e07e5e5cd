#!/usr/bin/env bash
# Decode latency, bandwidth and bytes per token: burst on 1 and 2 ranks, fp32 and bf16, and
# the tp and ring baselines on 2 ranks, one context length; a table from the JSON reports.
#   scripts/decode-bench.sh [CONTEXT] [TOKENS]      (defaults 32768 16; out/decode/*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
context=${1:-32768}
tokens=${2:-16}
out=out/decode
mkdir -p "$out"
grep -m1 "model name" /proc/cpuinfo
uptime
run() {  # run NAME FLAGS...
  local name=$1
  shift
  build/bin/burst decode --context "$context" --tokens "$tokens" --heads 8 --head-dim 128 --threads 1 \
    --json "$out/$name.json" "$@" > "$out/$name.txt"
}
run burst-p1-fp32 --ranks 1
run burst-p2-fp32 --ranks 2
run burst-p1-bf16 --ranks 1 --dtype bf16
run burst-p2-bf16 --ranks 2 --dtype bf16
run tp-p2-fp32 --ranks 2 --strategy tp
run ring-p2-fp32 --ranks 2 --strategy ring
/usr/bin/python3 - "$out" <<'PY'
import json, sys, glob, os
print(f"{'run':16} {'prefill s':>10} {'p50 ms':>9} {'p99 ms':>9} {'bytes/token':>12} {'cache MB/rank':>14} {'bandwidth':>10} {'max error':>10}")
for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    r = json.load(open(path))
    print(f"{os.path.basename(path)[:-5]:16} {r['prefill_seconds']:10.2f} {r['decode_ms_p50']:9.2f} {r['decode_ms_p99']:9.2f} "
          f"{r['bytes_per_token']:12.0f} {r['cache_bytes_per_rank'] / 1e6:14.1f} {100 * r['bandwidth_fraction']:9.0f}% "
          f"{r['max_error']:10.2e}")
PY
