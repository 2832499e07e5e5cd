#!/usr/bin/env bash
# Numbers that are not finite, and gradients that are exactly zero (issue 13, docs/numerics.md):
#   - one NaN or infinity planted in q, k, v or dO reaches exactly the outputs that depend on
#     it, in every strategy, causal and not, on every instruction set, fp32 and bf16 storage,
#     under mpirun too: `burst run --save` is compared with a NumPy float64 reference
#     (numbers_check.py) position by position, and burst's own check must pass (exit 0);
#   - exact zero gradients (--window 0,0, --seqlen 1) pass the check (exit 0).
source "$(dirname "$0")/lib.sh" "$@"
HERE=$(cd "$(dirname "$0")" && pwd)
CHECK="$HERE/numbers_check.py"

if ! "$PYTHON" -c 'import numpy' 2>/dev/null; then
  skip "non-finite inputs" "$PYTHON has no numpy"
else
  n=0
  # case NAME TENSOR ROW HEAD X VALUE MASK [bf16] -- BURST_ARGS...: plants VALUE at
  # TENSOR[0, ROW, HEAD, X] of fresh random inputs, runs burst and compares with the reference.
  case_() {
    local name=$1 tensor=$2 row=$3 head=$4 x=$5 value=$6 mask=$7 flavour=""
    shift 7
    if [ "$1" = bf16 ]; then flavour=bf16; shift; fi
    shift  # --
    n=$((n + 1))
    local dir="$TMP/case$n"
    mkdir -p "$dir/in"
    "$PYTHON" "$CHECK" make "$dir/in" "$n" && "$PYTHON" "$CHECK" plant "$dir/in" "$tensor" "$row" "$head" "$x" "$value"
    local mask_args=(--causal)
    [ "$mask" = full ] && mask_args=(--no-causal)
    local out rc
    out=$(timeout -k 5 120 "$@" "${mask_args[@]}" --q "$dir/in/q.npy" --k "$dir/in/k.npy" --v "$dir/in/v.npy" \
            --do "$dir/in/do.npy" --block-m 32 --block-n 32 --threads 1 --save "$dir/out" 2>&1)
    rc=$?
    if [ "$rc" -ne 0 ]; then
      bad "$name (burst exit $rc, expected 0)" "$(tail -n 8 <<<"$out")"
      return
    fi
    local verdict
    if verdict=$("$PYTHON" "$CHECK" check "$dir/in" "$dir/out" "$mask" $flavour 2>&1); then
      ok "$name"
    else
      bad "$name (outputs differ from the reference)" "$(head -n 6 <<<"$verdict")"
    fi
  }

  plants=("q 10 0 3 nan" "k 20 1 3 nan" "v 30 0 3 nan" "q 40 1 3 inf" "do 5 0 2 nan")
  for strategy in local burst ring allgather ulysses ring-rsa; do
    ranks=(--ranks 2)
    [ "$strategy" = local ] && ranks=()
    for mask in causal full; do
      for plant in "${plants[@]}"; do
        read -r t row head x value <<<"$plant"
        case_ "$strategy $mask: $t[$row,$head,$x] = $value" $t $row $head $x $value $mask -- \
          "$BURST" run --strategy $strategy "${ranks[@]}"
      done
    done
  done

  # Every instruction set the processor has, on the local kernels.
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
  has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
  for isa in generic avx2 avx512 avx512bf16; do
    case $isa in
      avx2) has avx2 fma || { skip "isa $isa" "not on this processor"; continue; } ;;
      avx512) has avx512f avx512bw avx512dq avx512vl || { skip "isa $isa" "not on this processor"; continue; } ;;
      avx512bf16) has avx512f avx512bw avx512dq avx512vl avx512_bf16 || { skip "isa $isa" "not on this processor"; continue; } ;;
    esac
    for plant in "k 50 0 1 inf" "v 60 1 1 -inf" "q 10 0 3 nan"; do
      read -r t row head x value <<<"$plant"
      case_ "local $isa causal: $t[$row,$head,$x] = $value" $t $row $head $x $value causal -- \
        "$BURST" run --strategy local --isa $isa
    done
  done

  # bf16 storage (the reference rounds the inputs alike), then the K/V-passing backward over a
  # striped layout.
  for strategy in local burst; do
    ranks=(--ranks 2)
    [ "$strategy" = local ] && ranks=()
    for plant in "q 10 0 3 nan" "v 30 0 3 nan"; do
      read -r t row head x value <<<"$plant"
      case_ "$strategy bf16 causal: $t[$row,$head,$x] = $value" $t $row $head $x $value causal bf16 -- \
        "$BURST" run --strategy $strategy "${ranks[@]}" --dtype bf16
    done
  done
  # bf16 on the AMX route, whose products split P and dS into bf16 parts and leave non-finite
  # inputs to a pass over visible pairs: on the processor where it has AMX, emulated where it
  # has avx512_bf16.
  amx_isas=()
  has avx512f avx512bw avx512dq avx512vl avx512_bf16 && amx_isas+=(amxbf16-emulated)
  has avx512f avx512bw avx512dq avx512vl avx512_bf16 amx_bf16 amx_tile && amx_isas+=(amxbf16)
  [ ${#amx_isas[@]} -eq 0 ] && skip "bf16 on the AMX route" "no avx512_bf16 on this processor"
  has amx_bf16 amx_tile || skip "bf16 on amxbf16" "no AMX on this processor (amxbf16-emulated runs instead)"
  for isa in "${amx_isas[@]}"; do
    for plant in "q 10 0 3 nan" "k 20 1 3 inf" "v 30 0 3 -inf" "do 5 0 2 nan"; do
      read -r t row head x value <<<"$plant"
      case_ "local $isa bf16 causal: $t[$row,$head,$x] = $value" $t $row $head $x $value causal bf16 -- \
        "$BURST" run --strategy local --dtype bf16 --isa $isa
    done
  done
  case_ "burst kv scheme, striped: k[20,1,3] = nan" k 20 1 3 nan causal -- \
    "$BURST" run --strategy burst --ranks 2 --bwd-scheme kv --layout striped

  # Under mpirun: the same shards, exchanged between processes.
  if [ -x "$MPIRUN" ]; then
    case_ "mpirun -np 2 burst causal: k[20,1,3] = nan" k 20 1 3 nan causal -- \
      "$MPIRUN" -np 2 "$BURST" run --strategy burst
  else
    skip "mpirun" "no $MPIRUN"
  fi
fi

# Exactly zero gradients: every row sees only its own key, or the only key, so dS = dP - delta
# cancels and dQ, dK are rounding noise around 0; the error floor keeps them from failing.
expect "window 0,0 local (dq = 0 exactly)" 0 "" \
  "$BURST" run --strategy local --window 0,0 --seqlen 512 --heads 2 --head-dim 128 --threads 2
expect "window 0,0 burst, 2 ranks" 0 "" \
  "$BURST" run --strategy burst --ranks 2 --window 0,0 --seqlen 512 --heads 2 --head-dim 64 --threads 1
expect "window 0,0 sampled check (seqlen 8192)" 0 "" \
  "$BURST" run --strategy burst --ranks 2 --window 0,0 --seqlen 8192 --heads 2 --head-dim 128 --threads 1
expect "seqlen 1, ranks 1" 0 "" "$BURST" run --seqlen 1 --ranks 1 --threads 1
expect "seqlen 1 local" 0 "" "$BURST" run --strategy local --seqlen 1 --heads 4 --head-dim 256 --threads 1

finish
