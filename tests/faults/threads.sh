#!/usr/bin/env bash
# Threads that cannot be created: a clear error naming the count, exit 2, nothing left
# running (the command returns).   threads.sh path/to/burst
source "$(dirname "$0")/lib.sh" "$@"
expect "--threads past the limit of a pool" 2 "threads: expected 1 to 1024, got 5000" \
  timeout 20 "$BURST" run --seqlen 256 --heads 2 --head-dim 32 --strategy local --threads 5000

# An ordinary user whose process limit is lower than the threads asked for (root is exempt
# from that limit, so the run drops to the user nobody).
user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
if "${user[@]}" true 2>/dev/null; then
  cp "$BURST" "$TMP/burst" && chmod 755 "$TMP/burst"
  expect "ulimit -u 200, --threads 500: exit 2 naming the count" 2 "threads: could not start 500 threads" \
    timeout 30 "${user[@]}" bash -c "ulimit -u 200 && exec '$TMP/burst' run --seqlen 256 --heads 2 --head-dim 32 --strategy local --threads 500"
  expect "ulimit -u 200, --ranks 300: exit 2 naming the rank" 2 "ranks: could not start the thread of rank" \
    timeout 30 "${user[@]}" bash -c "ulimit -u 200 && exec '$TMP/burst' run --seqlen 600 --heads 1 --head-dim 16 --ranks 300 --threads 1"
  if [ -n "${PYTHONPATH:-}" ] && "$PYTHON" -c "import burst" 2>/dev/null; then
    expect "Python threads=10**6: ValueError naming the count" 0 "ValueError: threads: expected 1 to 1024, got 1000000" \
      timeout 60 "$PYTHON" -c "
import torch, burst
q = torch.randn(1, 16, 2, 8)
try:
    burst.attention(q, q, q, threads=10**6)
except ValueError as e:
    print('ValueError:', e)"
  else
    skip "Python threads" "the burst module is not on PYTHONPATH"
  fi
else
  skip "thread limits" "cannot run as the unprivileged user nobody (setpriv)"
fi
finish
