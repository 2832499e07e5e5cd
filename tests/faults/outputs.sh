#!/usr/bin/env bash
# Output files: every path checked before any compute, every write checked, and a run that
# fails leaves the folders as they were (files are moved into place only when all of them
# were written).   outputs.sh path/to/burst
source "$(dirname "$0")/lib.sh" "$@"
small=(--seqlen 64 --heads 2 --head-dim 32 --ranks 2)

# --- a full file system: tmpfs of 20 KiB in a private mount namespace --------------------
full_fs() {  # full_fs SCRIPT: runs SCRIPT with $D a fresh 20 KiB tmpfs (in a mount namespace)
  unshare -m bash -c "mount -t tmpfs -o size=20k tmpfs '$TMP/fs' && D='$TMP/fs' && $1"
}
mkdir -p "$TMP/fs"
if full_fs "true" 2>/dev/null; then
  out=$(full_fs "'$BURST' run ${small[*]} --forward-only --save \$D/out; echo rc=\$?; ls -A \$D" 2>&1)
  if grep -q "rc=4" <<<"$out" && grep -q "No space left on device" <<<"$out" && ! grep -q "^out$" <<<"$out"; then
    ok "--save to a full file system: exit 4, the reason, and no folder left behind"
  else
    bad "--save to a full file system: exit 4, the reason, and no folder left behind" "$out"
  fi
  # Earlier results in the folder survive a failed run untouched.
  out=$(full_fs "mkdir \$D/out && printf old > \$D/out/o.npy && '$BURST' run ${small[*]} --save \$D/out --json \$D/out/r.json;
                 echo rc=\$?; echo files=\$(ls -A \$D/out | tr '\n' ' '); echo content=\$(cat \$D/out/o.npy)" 2>&1)
  if grep -q "^rc=4$" <<<"$out" && grep -q "^files=o.npy$" <<<"$out" && grep -q "^content=old$" <<<"$out"; then
    ok "a failed full run leaves an existing folder as it was"
  else
    bad "a failed full run leaves an existing folder as it was" "$out"
  fi
else
  skip "full file system" "cannot mount a tmpfs in a private mount namespace here"
fi

# --- paths that cannot be written are refused before any compute -------------------------
# A default-sized problem takes a minute: an answer within 20 s shows nothing was computed.
touch "$TMP/plain"
expect "--json under a plain file: exit 2 at once" 2 "--json: expected a folder that exists or can be created" \
  timeout 20 "$BURST" run --json "$TMP/plain/x.json"
expect "--save under a plain file: exit 2 at once" 2 "--save: expected a folder that exists or can be created" \
  timeout 20 "$BURST" run --save "$TMP/plain/out"
mkdir -p "$TMP/isdir.json"
expect "--json naming a folder: exit 2 at once" 2 "--json: expected a file, got the folder" \
  timeout 20 "$BURST" run --json "$TMP/isdir.json"
expect "--layer --save under a plain file: exit 2 at once" 2 "--save: expected a folder" \
  timeout 20 "$BURST" run --layer --save "$TMP/plain/out"
expect "plan --calibrate with an unwritable --calibration: exit 2 before calibrating" 2 \
  "--calibration: expected a folder that exists or can be created" \
  timeout 20 "$BURST" plan --calibrate --calibration "$TMP/plain/cal.json"
expect "bench --out under a plain file: exit 2 before the sweep" 2 "--out: expected a folder that exists or can be created" \
  timeout 20 "$BURST" bench --out "$TMP/plain/bench"
expect "plan --json under a plain file: exit 2" 2 "--json: expected a folder that exists or can be created" \
  timeout 20 "$BURST" plan --json "$TMP/plain/plan.json"

# --- as an ordinary user: read-only files and folders -------------------------------------
user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
if "${user[@]}" true 2>/dev/null; then
  cp "$BURST" "$TMP/burst" && chmod 755 "$TMP/burst"
  mkdir -p "$TMP/ro"
  printf old > "$TMP/ro/o.npy"
  printf old > "$TMP/ro/lse.npy"
  printf old > "$TMP/ro/dq.npy"
  chmod 444 "$TMP/ro/dq.npy"
  chown -R 65534:65534 "$TMP/ro"
  expect "--save into a folder with a read-only dq.npy: exit 2 naming it" 2 \
    "--save: expected a writable file, got '$TMP/ro/dq.npy' (Permission denied)" \
    "${user[@]}" "$TMP/burst" run "${small[@]}" --save "$TMP/ro"
  if [ "$(cat "$TMP/ro/o.npy")$(cat "$TMP/ro/lse.npy")" = oldold ] && [ "$(ls -A "$TMP/ro" | wc -l)" -eq 3 ]; then
    ok "o.npy and lse.npy untouched, nothing added"
  else
    bad "o.npy and lse.npy untouched, nothing added" "$(ls -la "$TMP/ro")"
  fi
  mkdir -p "$TMP/locked" && chmod 555 "$TMP/locked"
  expect "--json in a folder the user cannot write: exit 2" 2 "--json: expected a writable folder" \
    "${user[@]}" "$TMP/burst" run "${small[@]}" --json "$TMP/locked/r.json"
else
  skip "read-only outputs" "cannot run as the unprivileged user nobody (setpriv)"
fi

# --- success writes everything and leaves no temporary file -------------------------------
if "$BURST" run "${small[@]}" --save "$TMP/good/out" --json "$TMP/good/r.json" >/dev/null 2>&1 &&
   [ "$(ls -A "$TMP/good/out" | tr '\n' ' ')" = "dk.npy dq.npy dv.npy lse.npy o.npy " ] && [ -s "$TMP/good/r.json" ]; then
  ok "a good run writes every file and no temporary one"
else
  bad "a good run writes every file and no temporary one" "$(ls -la "$TMP/good" "$TMP/good/out" 2>&1)"
fi
finish
