#!/usr/bin/env bash
# Checks burst plan's predictions for this machine against measurements: runs `burst run` on a
# few configurations (attention core and layer, P = 2 and 4, s = 8K..32K, causal or not), asks
# `burst plan --cluster this` for the same ones, and prints predicted vs measured time per pass
# with the relative error, and the bytes per rank (which must agree exactly).
#
#   scripts/plan_check.sh [-o DIR] [--quick] [--only NAME,...] [--recalibrate] [--no-bracket]
#
# -o DIR   where the JSON files go (default out/plan_check); the table is also DIR/table.txt
# --quick  two small configurations only (a smoke test of the script)
# --only   just the named configurations (names as in the table)
# --recalibrate  calibrate again just before each configuration (`burst plan --calibrate --rounds 3`,
#          DIR/NAME.calibration.json) and predict it from that: on a shared machine whose speed
#          moves within minutes, this separates the model's error from the machine's drift
# Every run is bracketed by two probes of the kernels' speed (`burst plan --probe 3`: the fp32
# forward's rate now over the calibration's) unless --no-bracket. When they differ by more
# than 10% the machine changed speed during the run, and the run is repeated (3 tries at
# most; a row whose probes still differ is marked '~'). Each pass is predicted twice: at the
# calibration's rates ("calibrated" columns) and at the run's speed, the mean of its probes
# (`burst plan --speed`, "at speed" columns), which takes this machine's drift out of the
# error and leaves the model's.
# The last column is the 1-minute load average when the run started (the previous runs' own
# ranks included): on a shared machine the kernels' rate moves with it, so calibrate just
# before (delete the calibration file). A warning is printed when the machine is busy (load
# above half its cores) before the first run.
# Environment: BURST (default build/bin/burst), BURST_PLAN (default "$BURST plan"), REPEAT
# (timed runs per pass, default 1), CALIBRATION (default out/calibration.json; measured first
# with `burst plan --calibrate` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

out=out/plan_check
quick=0
only=""
recalibrate=0
bracket=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) only=",$2,"; shift 2 ;;
    --recalibrate) recalibrate=1; shift ;;
    --no-bracket) bracket=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 0 ;;
    *) echo "plan_check.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
BURST=${BURST:-build/bin/burst}
read -r -a PLAN <<< "${BURST_PLAN:-$BURST plan}"
REPEAT=${REPEAT:-1}
CALIBRATION=${CALIBRATION:-out/calibration.json}
mkdir -p "$out"

# The kernels' rates move with the machine's load: say so before measuring on a busy one.
busy() {
  awk -v cores="$(nproc)" '{ exit !($1 > 0.5 * cores) }' /proc/loadavg
}
if busy; then
  echo "plan_check: WARNING: the machine is busy (load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores);" \
       "measured times will be slower than predicted" >&2
fi

if [[ $recalibrate == 0 && ! -f "$CALIBRATION" ]]; then
  "${PLAN[@]}" --calibrate --calibration "$CALIBRATION"
fi

# The kernels' speed now against the calibration's (burst plan --probe prints "speed F ...").
speed_now() {
  "${PLAN[@]}" --probe 3 --calibration "$1" | awk '$1 == "speed" { print $2 }'
}

# name strategy ranks seqlen heads causal(0/1) backward(0/1) layer(0/1)
configs=(
  "core-burst-p2-8k         burst     2  8192 8 0 1 0"
  "core-burst-p2-16k-causal burst     2 16384 8 1 1 0"
  "core-burst-p4-16k-causal burst     4 16384 8 1 1 0"
  "core-burst-p2-16k-c-contig burst@contiguous 2 16384 8 1 1 0"
  "core-burst-p2-32k-causal burst     2 32768 4 1 0 0"
  "core-ring-p4-8k          ring      4  8192 8 0 1 0"
  "core-ringrsa-p2-8k       ring-rsa  2  8192 8 0 1 0"
  "core-ulysses-p2-8k       ulysses   2  8192 8 0 1 0"
  "core-double-p4-8k        burst-double 4 8192 8 0 1 0"
  "core-allgather-p4-8k-c   allgather 4  8192 8 1 1 0"
  "layer-burst-p2-8k-causal burst     2  8192 8 1 1 1"
  "layer-tpv3-p2-8k-causal  tp-v3     2  8192 8 1 1 1"
  "layer-burst-p4-16k       burst     4 16384 4 0 0 1"
)
if [[ $quick == 1 ]]; then
  configs=("core-burst-p2-2k burst 2 2048 4 1 1 0" "layer-tpv3-p2-2k tp-v3 2 2048 4 0 1 1")
fi
if [[ -n $only ]]; then
  chosen=()
  for c in "${configs[@]}"; do
    [[ $only == *",${c%% *},"* ]] && chosen+=("$c")
  done
  configs=("${chosen[@]}")
fi

for c in "${configs[@]}"; do
  read -r name strategy ranks seqlen heads causal backward layer <<< "$c"
  # strategy@layout: burst run's --layout, the planner's name for the same choice.
  layout=zigzag
  [[ $strategy == *@* ]] && layout=${strategy#*@}
  run_args=(--strategy "${strategy%@*}" --ranks "$ranks" --seqlen "$seqlen" --heads "$heads" --head-dim 128
            --repeat "$REPEAT")
  plan_args=(--cluster this --calibration "$CALIBRATION" --ranks "$ranks" --model custom --heads "$heads"
             --head-dim 128 --seqlen "$seqlen" --strategy "$strategy" --dtype fp32)
  if [[ $strategy == burst-double ]]; then
    # Two pretended nodes of ranks / 2: burst run's double ring, the planner's two nodes.
    run_args[1]=burst
    run_args+=(--double-ring --ranks-per-node $((ranks / 2)))
    plan_args+=(--nodes 2)
  fi
  # Both sides of each choice named explicitly: run and plan share their defaults (causal,
  # forward and backward), and a pass one of them ran by default would not be compared.
  if [[ $causal == 1 ]]; then
    run_args+=(--causal --layout "$layout")
    plan_args+=(--causal)
  else
    run_args+=(--no-causal)
    plan_args+=(--no-causal)
  fi
  if [[ $backward == 1 ]]; then
    run_args+=(--backward)
    plan_args+=(--backward)
  else
    run_args+=(--forward-only)
    plan_args+=(--forward-only)
  fi
  if [[ $layer == 1 ]]; then
    run_args+=(--layer)
    plan_args+=(--scope layer)
  else
    plan_args+=(--scope core)
  fi
  if [[ $recalibrate == 1 ]]; then
    "${PLAN[@]}" --calibrate --rounds 3 --calibration "$out/$name.calibration.json" > /dev/null 2>&1 ||
      { echo "plan_check: $name: calibration failed" >&2; continue; }
    plan_args[3]="$out/$name.calibration.json"  # the file after --calibration
  fi
  echo "plan_check: $name: $BURST run ${run_args[*]}" >&2
  rm -f "$out/$name.speed"
  for try in 1 2 3; do
    [[ $bracket == 1 ]] && before=$(speed_now "${plan_args[3]}")
    cut -d' ' -f1 /proc/loadavg > "$out/$name.load"  # the machine may be shared: say how busy
    "$BURST" run "${run_args[@]}" --json "$out/$name.measured.json" > "$out/$name.log" 2>&1 ||
      { echo "plan_check: $name failed (see $out/$name.log)" >&2; continue 2; }
    [[ $bracket == 1 ]] || break
    after=$(speed_now "${plan_args[3]}")
    echo "$before $after" > "$out/$name.speed"
    if awk -v a="$before" -v b="$after" 'BEGIN { r = b / a; exit !(r > 0.9 && r < 1.1) }'; then break; fi
    echo "plan_check: $name: the speed moved from $before to $after during the run (try $try of 3)" >&2
  done
  "${PLAN[@]}" "${plan_args[@]}" --json "$out/$name.predicted.json" > /dev/null
  if [[ -f "$out/$name.speed" ]]; then
    speed=$(awk '{ printf "%.4f", ($1 + $2) / 2 }' "$out/$name.speed")
    "${PLAN[@]}" "${plan_args[@]}" --speed "$speed" --json "$out/$name.at_speed.json" > /dev/null
  fi
done

/usr/bin/python3 - "$out" "${configs[@]}" <<'EOF' | tee "$out/table.txt"
import json, os, sys
out = sys.argv[1]
print(f"{'':46} {'calibrated':>19}  {'at the run speed':>30}")
print(f"{'config':26} {'pass':8} {'measured s':>10} {'predicted s':>11} {'error':>7}  {'speed':>13} {'predicted s':>11} {'error':>7}"
      f"  {'bytes/rank predicted':>20} {'measured':>12} {'load':>5}")
errors, speed_errors, marked = [], [], 0
for c in sys.argv[2:]:
    name, strategy, ranks, seqlen, heads, causal, backward, layer = c.split()
    mp, pp = f"{out}/{name}.measured.json", f"{out}/{name}.predicted.json"
    if not (os.path.exists(mp) and os.path.exists(pp)):
        print(f"{name:26} missing measurement or prediction")
        continue
    m = json.load(open(mp))
    load = open(f"{out}/{name}.load").read().strip() if os.path.exists(f"{out}/{name}.load") else "?"
    p = json.load(open(pp))["results"][0]["strategies"][0]
    sp_path = f"{out}/{name}.at_speed.json"
    sp = json.load(open(sp_path))["results"][0]["strategies"][0] if os.path.exists(sp_path) else None
    speeds = open(f"{out}/{name}.speed").read().split() if os.path.exists(f"{out}/{name}.speed") else None
    passes = ["forward", "backward"] if backward == "1" else ["forward"]
    for which in passes:
        pred = p[f"{which}_seconds"]
        pred_bytes = p[f"{which}_bytes_per_rank"]
        if layer == "1":
            meas = m[which]["seconds"]
            meas_bytes = m[which]["bytes_sent_per_rank"]
        else:
            meas = m[f"{which}_seconds"]
            meas_bytes = m["distributed"][f"{which}_bytes_sent_per_rank"]
        err = (pred - meas) / meas
        errors.append(abs(err))
        speed_cols = f"{'':13} {'':11} {'':7}"
        if sp is not None and speeds and len(speeds) == 2:
            a, b = float(speeds[0]), float(speeds[1])
            steady = 0.9 < b / a < 1.1
            marked += 0 if steady else 1
            sp_pred = sp[f"{which}_seconds"]
            sp_err = (sp_pred - meas) / meas
            speed_errors.append(abs(sp_err))
            speed_cols = f"{a:5.2f}->{b:4.2f}{' ' if steady else '~'}  {sp_pred:11.3f} {sp_err*100:+6.1f}%"
        print(f"{name:26} {which:8} {meas:10.3f} {pred:11.3f} {err*100:+6.1f}%  {speed_cols}  {pred_bytes:20.0f} {meas_bytes:12.0f} {load:>5}")
def summary(what, e):
    e = sorted(e)
    print(f"{what}: {len(e)} passes, median |error| {e[len(e)//2]*100:.1f}%, max {e[-1]*100:.1f}%")
print()
if errors:
    summary("at the calibration's rates", errors)
if speed_errors:
    summary("at each run's probed speed", speed_errors)
    if marked:
        print(f"  ({marked} passes marked ~: their probes still differed by more than 10% after 3 tries)")
EOF
