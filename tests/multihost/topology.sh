#!/usr/bin/env bash
# Topology across namespace hosts (run inside scripts/multihost.sh): the communicator groups
# ranks into nodes exactly as they sit on hosts, and BurstAttention's single and double ring
# send exactly the intra- and inter-host bytes of their formulas (check_links.py). Both checks
# are also shown to fail: a wrong grouping (BURST_RANKS_PER_NODE) and a wrong formula.
#   topology.sh MH_TOPOLOGY BURST
set -u
here=$(dirname "$(readlink -f "$0")")
source "$here/lib.sh"
topology=$1
burst=$2
hosts=$MULTIHOST_HOSTS
slots=$MULTIHOST_SLOTS
ranks=$MULTIHOST_RANKS

mpi topology "$topology" "$hosts"
if [ "$rc" -eq 0 ] && grep -q "grouping matches" <<<"$output"; then
  ok "node grouping matches $hosts hosts x $slots ranks"
  grep "^topology:" <<<"$output" | sed 's/^/      /'
else
  bad "node grouping ($hosts hosts x $slots ranks, exit $rc)" "$output"
fi

# The check can fail: pretend nodes of another size than the hosts'.
wrong=$((slots == 1 ? 2 : 1))
BURST_RANKS_PER_NODE=$wrong mpi topology-wrong "$topology" "$hosts"
if [ "$rc" -ne 0 ] && grep -q "node grouping does not match the hosts\|expected $hosts nodes" <<<"$output"; then
  ok "a wrong grouping (BURST_RANKS_PER_NODE=$wrong) is caught"
else
  bad "a wrong grouping (BURST_RANKS_PER_NODE=$wrong) was not caught (exit $rc)" "$output"
fi

# Bytes per link class. seqlen 8P: equal zigzag shards.
problem=(run --strategy burst --seqlen $((64 * ranks)) --heads 4 --kv-heads 2 --head-dim 16 --causal --layout zigzag
         --backward --bwd-scheme q --repeat 1 --threads 1)
for ring in single double; do
  flags=()
  [ "$ring" = double ] && flags=(--double-ring)
  json="$out_dir/links-$ring.json"
  mpi "links-$ring" "$burst" "${problem[@]}" "${flags[@]}" --json "$json"
  if [ "$rc" -ne 0 ]; then
    bad "$ring ring run (exit $rc)" "$output"
    continue
  fi
  check=$(python3 "$here/check_links.py" "$json" "$ring" 2>&1)
  if [ $? -eq 0 ]; then
    ok "$ring ring: intra- and inter-host bytes of every rank equal the formula"
    sed 's/^/      /' <<<"$check"
  else
    bad "$ring ring: bytes per link class differ from the formula" "$check"
  fi
done
# The check can fail: the single ring's counts against the double ring's formula (they differ
# whenever there are several hosts and the single ring crosses hosts more often).
if [ -f "$out_dir/links-single.json" ] && ! python3 "$here/check_links.py" "$out_dir/links-single.json" double > /dev/null 2>&1; then
  ok "the formula check tells the single ring from the double ring"
else
  bad "the formula check did not tell the single ring from the double ring"
fi
finish
