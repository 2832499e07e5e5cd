#!/usr/bin/env bash
# Every strategy across namespace hosts whose links are rate-limited (scripts/multihost.sh):
# time and bytes per link class, forward + backward, for the comparison in docs/multihost.md.
#   scripts/multihost-bench.sh [-o NAME] [--rates "1gbit 300mbit"] [--shapes "2x2 4x1"]
#                              [--seqlens "16384 32768"] [--strategies "burst burst-dr ..."]
#                              [--kv-heads "8 2"] [--block] [--timeout S] [--report]
#                              [-- extra burst run flags]
# shapes are HOSTSxRANKS_PER_HOST. The problem: MHA, 8 heads, d = 128, causal, zigzag, fp32,
# one thread per rank, --repeat 1 (override with flags after --). Strategies (default: all):
# burst, burst-dr (double ring), ring, ring-rsa, ulysses, usp (Ulysses inside groups of 2),
# allgather, and at layer level (--layer) tp-v3 and burst-dr-layer.
# --kv-heads sweeps key/value head counts (8: MHA, 2: GQA 8/2; default 8). --block runs every
# strategy as transformer blocks (burst run --block; --layers and --mlp-dim go after --), tp-v1
# and tp-v3 included; default strategies then: burst burst-dr ring ulysses usp tp-v3 tp-v1, and
# NAME multihost-block. The paper's regime (docs/block.md):
#   scripts/multihost-bench.sh --block --rates "100mbit 300mbit" --shapes "2x2 4x1" \
#       --seqlens "16384 32768" --kv-heads "8 2"
# Writes out/NAME/<rate>-<shape>-<seqlen>[-kv<G>]-<strategy>.{json,txt} (-kv<G> when G is not 8),
# then out/NAME.json, .csv and .md (NAME: multihost-bench); a run that fails or cannot fit in
# memory is listed with why.
# --report only rebuilds the tables from the runs already in out/NAME (after adding runs of
# a subset of rates, shapes or strategies).
# Inter-host bytes are Burst's own count of what each rank sent to ranks on other hosts
# (burst run --json); "wire" is what crossed the hosts' links during the whole job (the
# interfaces' counters: packet headers, MPI's own messages, the result gather included).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

name=
rates="1gbit 300mbit"
shapes="2x2 4x1"
seqlens="16384 32768"
strategies=
kv_list="8"
block=0
timeout_s=1500
inside=
report_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    -o) name=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    --seqlens) seqlens=$2; shift 2 ;;
    --strategies) strategies=$2; shift 2 ;;
    --kv-heads) kv_list=$2; shift 2 ;;
    --block) block=1; shift ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --inside) inside=$2; shift 2 ;;
    --report) report_only=1; shift ;;
    --) shift; break ;;
    *) echo "multihost-bench: unknown option '$1' (see the top of $0)" >&2; exit 2 ;;
  esac
done
extra=("$@")
if [ "$block" = 1 ]; then
  : "${name:=multihost-block}" "${strategies:=burst burst-dr ring ulysses usp tp-v3 tp-v1}"
else
  : "${name:=multihost-bench}" "${strategies:=burst burst-dr ring ring-rsa ulysses usp allgather tp-v3 burst-dr-layer}"
fi
dir="$root/out/$name"

flags_of() {
  local level=
  [ "$block" = 1 ] && level=--block
  case "$1" in
    burst) echo "$level --strategy burst" ;;
    burst-dr) echo "$level --strategy burst --double-ring" ;;
    ring | ring-rsa | ulysses | allgather) echo "$level --strategy $1" ;;
    usp) echo "$level --strategy usp --ulysses-degree 2" ;;
    tp-v1 | tp-v3) echo "${level:---layer} --strategy $1" ;;
    burst-dr-layer)
      [ "$block" = 1 ] && { echo "multihost-bench: burst-dr-layer is a layer run; with --block use burst-dr" >&2; return 1; }
      echo "--layer --strategy burst --double-ring" ;;
    *) echo "multihost-bench: unknown strategy '$1'" >&2; return 1 ;;
  esac
}

# The file name part of a kv-head count: none for MHA's 8 (older runs keep their names).
kv_part() { [ "$1" = 8 ] || echo "-kv$1"; }

wire_bytes() {  # bytes sent by all hosts' interfaces so far
  local total=0 i n
  for ((i = 0; i < MULTIHOST_HOSTS; i++)); do
    n=$(ip netns exec "mhp-h$i" cat /sys/class/net/eth0/statistics/tx_bytes)
    total=$((total + n))
  done
  echo "$total"
}

# Inside one sandbox: every seqlen and strategy for this rate and shape.
run_inside() {
  export BURST_TIMEOUT=600
  for seqlen in $seqlens; do
   for kv in $kv_list; do
    for strategy in $strategies; do
      base="$dir/$inside-$seqlen$(kv_part "$kv")-$strategy"
      rm -f "$base.json" "$base.skipped"
      read -ra flags <<<"$(flags_of "$strategy")" || continue
      # ring-rsa materialises fp32 score rows: b h (s / P) s x 4 bytes per rank, twice in the
      # backward. Refused here rather than left to the kernel's out-of-memory killer.
      if [ "$strategy" = ring-rsa ]; then
        need=$((2 * 8 * seqlen * seqlen * 4))
        avail=$(($(awk '/MemAvailable/ { print $2 }' /proc/meminfo) * 1024))  # kB; bash, not awk, multiplies (64 bits)
        if [ "$need" -gt $((avail * 9 / 10)) ]; then
          echo "needs $((need >> 30)) GiB of score rows over all ranks, $((avail >> 30)) GiB available" > "$base.skipped"
          echo "multihost-bench: $inside s=$seqlen $strategy skipped: $(cat "$base.skipped")" >&2
          continue
        fi
      fi
      echo "multihost-bench: $inside s=$seqlen $strategy" >&2
      before=$(wire_bytes)
      start=$(date +%s.%N)
      "$MULTIHOST" mpirun -x BURST_TIMEOUT "$dir/burst" run "${flags[@]}" --seqlen "$seqlen" --heads 8 \
        --kv-heads "$kv" --head-dim 128 --causal --layout zigzag --backward --repeat 1 --threads 1 "${extra[@]}" --json "$base.json" \
        > "$base.txt" 2>&1
      rc=$?
      wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
      echo "{\"wire_bytes\": $(($(wire_bytes) - before)), \"job_seconds\": $wall, \"exit\": $rc}" > "$base.wire.json"
      if [ "$rc" -ne 0 ]; then
        { grep -m1 -E "burst: (rank [0-9]+: )?error|FAILED|Killed|killed|timeout" "$base.txt" || echo "exit $rc"; } > "$base.skipped"
        rm -f "$base.json"
      fi
    done
   done
  done
}
if [ -n "$inside" ]; then
  run_inside
  exit  # on a line of its own: even a run_inside cut short never falls through to the loop below
fi

mkdir -p "$dir"
# Every run uses one copy of the binary: a rebuild of build/ while this runs (minutes to an
# hour) must not change it, nor catch a job starting while the linker writes the file.
[ "$report_only" = 1 ] || cp build/bin/burst "$dir/burst"
[ "$report_only" = 1 ] && rates_to_run= || rates_to_run=$rates
for rate in $rates_to_run; do
  for shape in $shapes; do
    hosts=${shape%x*}
    slots=${shape#*x}
    scripts/multihost.sh --hosts "$hosts" --slots "$slots" --rate "$rate" --timeout "$timeout_s" -- \
      "$root/scripts/multihost-bench.sh" --inside "$rate-$shape" -o "$name" --seqlens "$seqlens" \
      --strategies "$strategies" --kv-heads "$kv_list" $([ "$block" = 1 ] && echo --block) -- "${extra[@]}"
    rc=$?
    [ "$rc" -eq 77 ] && exit 77
  done
done

/usr/bin/python3 - "$dir" "$rates" "$shapes" "$seqlens" "$strategies" "$kv_list" <<'PY'
import csv, json, os, sys
folder, rates, shapes, seqlens, strategies, kv_list = sys.argv[1], *[a.split() for a in sys.argv[2:]]
rows = []
for rate in rates:
  for shape in shapes:
    for s in seqlens:
      for kv in kv_list:
            for st in strategies:
                base = f"{folder}/{rate}-{shape}-{s}{'' if kv == '8' else '-kv' + kv}-{st}"
                row = {"rate": rate, "shape": shape, "seqlen": int(s), "kv_heads": int(kv), "strategy": st}
                if os.path.exists(base + ".wire.json"):
                    w = json.load(open(base + ".wire.json"))
                    row["wire_mb"] = w["wire_bytes"] / 1e6
                    row["job_s"] = w["job_seconds"]
                if not os.path.exists(base + ".json"):
                    reason = open(base + ".skipped").read().strip() if os.path.exists(base + ".skipped") else "not run"
                    row["skipped"] = reason
                    rows.append(row)
                    continue
                r = json.load(open(base + ".json"))
                if r.get("block"):
                    f, b = r["forward"], r["backward"]
                    row.update(fwd_s=f["seconds"], bwd_s=b["seconds"],
                               inter=sum(f["inter_node_bytes_by_rank"]) + sum(b["inter_node_bytes_by_rank"]),
                               intra=sum(f["intra_node_bytes_by_rank"]) + sum(b["intra_node_bytes_by_rank"]),
                               per_rank=f["bytes_sent_per_rank"] + b["bytes_sent_per_rank"],
                               activations=f["activation_bytes_sent_per_rank"] + b["activation_bytes_sent_per_rank"],
                               error=r["y_error"] if r["y_error"] is not None else float("nan"),
                               exposed=f["exposed_seconds"] + b["exposed_seconds"],
                               memory_mb=r["peak_alloc_mb"], estimate_mb=r["memory_estimate_mb"],
                               bytes_match=r["bytes_match"])
                elif r.get("layer"):
                    f, b = r["forward"], r["backward"]
                    row.update(fwd_s=f["seconds"], bwd_s=b["seconds"],
                               inter=sum(f["inter_node_bytes_by_rank"]) + sum(b["inter_node_bytes_by_rank"]),
                               intra=sum(f["intra_node_bytes_by_rank"]) + sum(b["intra_node_bytes_by_rank"]),
                               per_rank=f["bytes_sent_per_rank"] + b["bytes_sent_per_rank"],
                               error=r["y_error"], exposed=f["exposed_seconds"] + b["exposed_seconds"])
                else:
                    d = r["distributed"]
                    row.update(fwd_s=r["forward_seconds"], bwd_s=r["backward_seconds"],
                               inter=sum(d["forward_bytes_inter_node_by_rank"]) + sum(d["backward_bytes_inter_node_by_rank"]),
                               intra=sum(d["forward_bytes_intra_node_by_rank"]) + sum(d["backward_bytes_intra_node_by_rank"]),
                               per_rank=d["forward_bytes_sent_per_rank"] + d["backward_bytes_sent_per_rank"],
                               error=r["max_error"], exposed=d["forward_exposed_seconds"] + d["backward_exposed_seconds"])
                row["total_s"] = row["fwd_s"] + row["bwd_s"]
                rows.append(row)
json.dump(rows, open(folder + ".json", "w"), indent=1)
keys = ["rate", "shape", "seqlen", "kv_heads", "strategy", "fwd_s", "bwd_s", "total_s", "exposed", "inter", "intra",
        "per_rank", "activations", "memory_mb", "estimate_mb", "bytes_match", "wire_mb", "job_s", "error", "skipped"]
with open(folder + ".csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for row in rows: w.writerow(row)
lines = []
for rate in rates:
  for shape in shapes:
    for s in seqlens:
        for kv in kv_list:
            group = [r for r in rows if r["rate"] == rate and r["shape"] == shape and r["seqlen"] == int(s)
                     and r["kv_heads"] == int(kv)]
            if not group: continue
            heads = "MHA 8 heads" if kv == "8" else f"GQA 8/{kv}"
            lines.append(f"\n**{shape} (hosts x ranks), inter-host links {rate}, s = {s}, {heads}**\n")
            lines.append("| strategy | fwd s | bwd s | fwd+bwd s | exposed comm. s | inter-host MB (all ranks) | "
                         "intra-host MB | sent MB/rank | activations MB/rank | Burst alloc MB/rank | wire MB (job) | error |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in group:
                if "skipped" in r:
                    lines.append(f"| {r['strategy']} | skipped: {r['skipped'][:110]} |" + " |" * 10)
                    continue
                mark = "" if r.get("bytes_match", True) else " (bytes MISMATCH)"
                lines.append(f"| {r['strategy']}{mark} | {r['fwd_s']:.2f} | {r['bwd_s']:.2f} | {r['total_s']:.2f} | "
                             f"{r['exposed']:.2f} | {r['inter'] / 1e6:.0f} | {r['intra'] / 1e6:.0f} | "
                             f"{r['per_rank'] / 1e6:.0f} | {r.get('activations', r['per_rank']) / 1e6:.0f} | "
                             f"{r.get('memory_mb', float('nan')):.0f} | {r.get('wire_mb', 0):.0f} | {r['error']:.1e} |")
open(folder + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwrote {folder}.json, {folder}.csv, {folder}.md")
PY
