# Helpers of the multihost tests, sourced by them. They run inside scripts/multihost.sh's
# sandbox, where "$MULTIHOST" mpirun starts a job across the namespace hosts under a hard
# timeout.
passed=0
failed=0
out_dir=${TMPDIR:-/tmp}

ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ]; then tail -n 25 <<<"$2" | sed 's/^/      /'; fi
}

# mpi NAME ARGS...: runs ARGS across the hosts; sets $rc and $output.
mpi() {
  local name=$1
  shift
  output=$("$MULTIHOST" mpirun -x BURST_TIMEOUT -x BURST_RANKS_PER_NODE "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 124 ]; then
    output+=$'\n'"multihost: $name: mpirun passed its hard timeout (${MULTIHOST_TIMEOUT}s)"
  fi
}

# expect_ok NAME ARGS...: the job exits 0.
expect_ok() {
  local name=$1
  mpi "$@"
  if [ "$rc" -eq 0 ]; then ok "$name"; else bad "$name (exit $rc)" "$output"; fi
}

# no_leftovers NAME SECONDS: no mpirun, orted or Burst process is left in the sandbox after at
# most SECONDS (daemons take a moment to exit after mpirun returns).
no_leftovers() {
  local name=$1 limit=$2 left i
  for ((i = 0; i < limit * 5; i++)); do
    left=$("$MULTIHOST" leftovers)
    [ -z "$left" ] && { ok "$name: nothing left running"; return 0; }
    sleep 0.2
  done
  bad "$name: processes left running after ${limit}s" "$left"
}

finish() {
  echo "multihost: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

export BURST_TIMEOUT=${BURST_TIMEOUT:-60}
export BURST_RANKS_PER_NODE=${BURST_RANKS_PER_NODE:-}
