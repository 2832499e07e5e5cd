#!/usr/bin/env bash
# .npy inputs read as strictly as numpy reads them (issue 13): a header numpy refuses is
# refused with a message naming the flag and the file, a key given twice counts last (as
# numpy loads it), and a path that is no readable file says why.
source "$(dirname "$0")/lib.sh" "$@"

if ! "$PYTHON" -c 'import numpy' 2>/dev/null; then
  skip "npy" "$PYTHON has no numpy"
  finish
  exit
fi

# k.npy, v.npy: random [1, 8, 2, 16]; q_*.npy: random q data under hand-written headers.
"$PYTHON" - "$TMP" <<'PY' || bad "writing the .npy files"
import struct, sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(13)
for name in ("k", "v"):
    np.save(f"{d}/{name}.npy", rng.standard_normal((1, 8, 2, 16)).astype(np.float32))
q = rng.standard_normal((1, 8, 2, 16)).astype("<f4").tobytes()
def raw(name, header):
    h = header
    while (10 + len(h) + 1) % 64:
        h += " "
    h += "\n"
    with open(f"{d}/{name}", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode("latin1") + q)
head = "{'descr': '<f4', 'fortran_order': False, "
raw("q_stray.npy", "{'descr': '<f4', 'x', 'fortran_order': False, 'shape': (1, 8, 2, 16), }")
raw("q_no_brace.npy", head + "'shape': (1, 8, 2, 16), ")
raw("q_extra_key.npy", head + "'shape': (1, 8, 2, 16), 'x': (1,)}")
# numpy keeps the last 'shape': this file is [1, 8, 2, 16] to numpy, whatever the first says.
raw("q_dup_shape.npy", head + "'shape': (8, 2, 16), 'shape': (1, 8, 2, 16), }")
raw("q_dup_shape_bad.npy", head + "'shape': (1, 8, 2, 16), 'shape': (8, 2, 16), }")
# What numpy says about each, so the expectations below are numpy's.
for name, verdict in (("q_stray.npy", False), ("q_no_brace.npy", False), ("q_extra_key.npy", False),
                      ("q_dup_shape.npy", (1, 8, 2, 16)), ("q_dup_shape_bad.npy", (8, 2, 16))):
    try:
        got = np.load(f"{d}/{name}").shape
    except Exception:
        got = False
    assert got == verdict, (name, got, verdict)
PY

kv=(--k "$TMP/k.npy" --v "$TMP/v.npy" --strategy local --repeat 1)
expect "stray 'x' entry in the header is refused" 2 "--q: '$TMP/q_stray.npy' has a malformed .npy header: expected ':' after the key 'x'" \
  "$BURST" run --q "$TMP/q_stray.npy" "${kv[@]}"
expect "header without its closing brace is refused" 2 "--q: '$TMP/q_no_brace.npy' has a malformed .npy header: expected a string key or '}'" \
  "$BURST" run --q "$TMP/q_no_brace.npy" "${kv[@]}"
expect "header with a key besides descr, fortran_order, shape is refused" 2 "unexpected key 'x'" \
  "$BURST" run --q "$TMP/q_extra_key.npy" "${kv[@]}"
expect "repeated 'shape': the last counts, as in numpy (runs)" 0 "result    ok" \
  "$BURST" run --q "$TMP/q_dup_shape.npy" "${kv[@]}"
expect "repeated 'shape': the last counts, as in numpy (3-D refused)" 2 "--q: expected a 4-D array" \
  "$BURST" run --q "$TMP/q_dup_shape_bad.npy" "${kv[@]}"

mkdir -p "$TMP/dir.npy"
expect "a directory as --q says so" 2 "--q: '$TMP/dir.npy' is a directory, expected a .npy file" \
  "$BURST" run --q "$TMP/dir.npy" "${kv[@]}"
expect "a missing --q says why it cannot be opened" 2 "--q: cannot open '$TMP/none.npy' (No such file or directory)" \
  "$BURST" run --q "$TMP/none.npy" "${kv[@]}"
expect "a path through a file says why it cannot be opened" 2 "--q: cannot open '$TMP/k.npy/q.npy' (Not a directory)" \
  "$BURST" run --q "$TMP/k.npy/q.npy" "${kv[@]}"

finish
