#!/usr/bin/env bash
# Flags that would be silently ignored are refused by name, and tolerances follow what each
# flag changes.   flags.sh path/to/burst
source "$(dirname "$0")/lib.sh" "$@"
s=(--seqlen 128 --heads 2 --head-dim 32 --ranks 2 --threads 1)

expect "--forward-only with --do" 2 "--forward-only cannot be combined with --do" \
  "$BURST" run "${s[@]}" --forward-only --do "$TMP/do.npy"
expect "--forward-only with --backward" 2 "--forward-only cannot be combined with --backward" \
  "$BURST" run "${s[@]}" --forward-only --backward
expect "--forward-only with --bwd-scheme" 2 "--forward-only cannot be combined with --bwd-scheme" \
  "$BURST" run "${s[@]}" --forward-only --bwd-scheme q
expect "--forward-only with --grad-wire" 2 "--forward-only cannot be combined with --grad-wire" \
  "$BURST" run "${s[@]}" --forward-only --grad-wire bf16
expect "--causal with --no-causal" 2 "--causal cannot be combined with --no-causal" \
  "$BURST" run "${s[@]}" --causal --no-causal
expect "--ulysses-degree without usp" 2 "--ulysses-degree: applies to --strategy usp only, got --strategy burst" \
  "$BURST" run "${s[@]}" --ulysses-degree 2
expect "--bwd-scheme with allgather" 2 "--bwd-scheme: applies to --strategy burst, usp only, got --strategy allgather" \
  "$BURST" run "${s[@]}" --strategy allgather --bwd-scheme kv
expect "--bwd-scheme with ring" 2 "--bwd-scheme: applies to --strategy burst, usp only, got --strategy ring" \
  "$BURST" run "${s[@]}" --strategy ring --bwd-scheme q
expect "--grad-wire with ulysses" 2 "--grad-wire: applies to --strategy burst, ring, usp only" \
  "$BURST" run "${s[@]}" --strategy ulysses --grad-wire bf16
expect "--double-ring with allgather" 2 "--double-ring: applies to --strategy burst, ring, usp only" \
  "$BURST" run "${s[@]}" --strategy allgather --double-ring
expect "--layout with local" 2 "--layout: does not apply to --strategy local" \
  "$BURST" run --seqlen 128 --heads 2 --head-dim 32 --strategy local --layout striped
expect "--ranks-per-node with local" 2 "--ranks-per-node: does not apply to --strategy local" \
  "$BURST" run --seqlen 128 --heads 2 --head-dim 32 --strategy local --ranks-per-node 2
# Packed documents come from one source, and only to a strategy that takes them.
expect "--doc-lens with --doc-lens-from" 2 "--doc-lens cannot be combined with --doc-lens-from" \
  "$BURST" run "${s[@]}" --doc-lens 128 --doc-lens-from "$TMP/lens.txt"
expect "--doc-lens-from with --doc-dist" 2 "--doc-lens-from cannot be combined with --doc-dist" \
  "$BURST" run "${s[@]}" --doc-lens-from "$TMP/lens.txt" --doc-dist pretrain
expect "documents with ring-rsa" 2 "--strategy: ring-rsa: packed documents are not supported" \
  "$BURST" run "${s[@]}" --strategy ring-rsa --doc-dist fixed:32
expect "documents with --layout doc-zigzag run" 0 "result    ok" "$BURST" run "${s[@]}" --doc-lens 100,28 --layout doc-zigzag
# Still accepted where they act.
expect "--bwd-scheme kv with burst runs" 0 "result    ok" "$BURST" run "${s[@]}" --bwd-scheme kv
expect "--ulysses-degree with usp runs" 0 "result    ok" "$BURST" run "${s[@]}" --strategy usp --ulysses-degree 2

# A bf16 gradient wire widens the gradients' tolerance only; the forward keeps fp32's.
if "$BURST" run "${s[@]}" --grad-wire bf16 --json "$TMP/wire.json" >/dev/null 2>&1 &&
   "$PYTHON" -c "
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r['tolerance'] == 1e-4 and r['gradient_tolerance'] == 1e-2 else 1)" "$TMP/wire.json"; then
  ok "--grad-wire bf16: forward tolerance 1e-4, gradients 1e-2"
else
  bad "--grad-wire bf16: forward tolerance 1e-4, gradients 1e-2" "$(cat "$TMP/wire.json" 2>&1 | grep tolerance)"
fi
finish
