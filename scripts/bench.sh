#!/usr/bin/env bash
# Runs the local-attention benchmarks and writes JSON next to the console table.
#   scripts/bench.sh                 the default set (s = 1K and 4K, fp32 and bf16, d = 128)
#   scripts/bench.sh REGEX [ARGS]    a --benchmark_filter of your own, extra benchmark flags
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-'sgemm|(fwd|bwd)/(fp32|bf16)/d128/s(1024|4096)/|naive/.*/s(1024|4096)/'}
shift || true
mkdir -p out
exec build/bin/bench_attention --benchmark_filter="$filter" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out=out/bench_attention.json \
  --benchmark_out_format=json "$@"
