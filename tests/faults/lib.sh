# Shared by the fault scripts: counters, expectations on exit status and message, and the
# closing "N passed, N failed" line.   source "$(dirname "$0")/lib.sh" "$@"
set -u
BURST=${1:?usage: SCRIPT path/to/burst}
MPIRUN=${BURST_MPIRUN:-$(dirname "${BASH_SOURCE[0]}")/../../scripts/mpirun.sh}
PYTHON=${PYTHON:-/usr/bin/python3}
TMP=$(mktemp -d)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
skipped=0

ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ]; then while IFS= read -r line; do echo "      $line"; done <<<"$2"; fi
}
skip() { skipped=$((skipped + 1)); echo "skip  $1: $2"; }

# expect NAME RC SUBSTRING CMD...: runs CMD (60 s at most), checks its exit status and that
# its output (stdout and stderr) contains SUBSTRING (empty: anything).
expect() {
  local name=$1 want=$2 text=$3
  shift 3
  local out rc
  out=$(timeout -k 5 120 "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$want" ] && [[ $out == *"$text"* ]]; then
    ok "$name"
  else
    bad "$name (exit $rc, expected $want with '$text')" "$(tail -n 15 <<<"$out")"
  fi
}

# count_lines TEXT: counts lines "ok NAME" and "FAIL NAME" printed by a checker (Python);
# anything else it printed is a failure.
count_lines() {
  local line
  while IFS= read -r line; do
    case $line in
      ok\ *) ok "${line#ok }" ;;
      FAIL\ *) bad "${line#FAIL }" ;;
      *) bad "python: $line" ;;
    esac
  done <<<"$1"
}

# finish: the closing line and the script's exit status.
finish() {
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}
