#!/usr/bin/env bash
# burst bench's files read back exactly (issue 13): bench.csv holds the numbers bench.json
# holds (integers as integers, others to 9 significant digits: an error of 2e-7 is not
# "0.000000", a byte count not "24576.000000"), its fields quoted per RFC 4180 (a skip reason
# with commas stays one field, unaltered), and bench.json's own header numbers are exact; the
# columns of the layouts' and documents' sweep too, after the original ones.
source "$(dirname "$0")/lib.sh" "$@"

out=$TMP/bench
# 2^40 tokens cannot fit any machine: that point is skipped with a reason full of commas.
expect "bench runs" 0 "wrote $out/bench.json" \
  "$BURST" bench --strategies burst,ulysses --seqlens 64,1099511627776 --ranks 2,3 --heads 2 --head-dim 16 \
  --link-gbps 12.3456789 --layouts zigzag,balanced --doc-dists none,fixed:24 --out "$out"

results=$("$PYTHON" - "$out" <<'PY' 2>&1
import csv, json, re, sys
out = sys.argv[1]
try:
    doc = json.load(open(f"{out}/bench.json"))
    rows = list(csv.reader(open(f"{out}/bench.csv", newline="")))
except Exception as e:
    print(f"FAIL reading bench.json and bench.csv: {type(e).__name__}: {e}")
    sys.exit()
header, rows = rows[0], rows[1:]
points = doc["points"]

def check(name, cond, detail=""):
    print(f"ok {name}" if cond else f"FAIL {name}: {detail}")

check("bench.json keeps --link-gbps exactly", doc["link_gbps"] == 12.3456789, f"link_gbps {doc['link_gbps']}")
check("one CSV row per JSON point", len(rows) == len(points), f"{len(rows)} rows, {len(points)} points")
check("every CSV row has the header's fields", all(len(r) == len(header) for r in rows),
      [len(r) for r in rows] + ["header", len(header)])
columns = {"forward_s": "forward_seconds", "backward_s": "backward_seconds",
           "forward_bytes_per_rank": "forward_bytes_per_rank", "backward_bytes_per_rank": "backward_bytes_per_rank",
           "exposed_forward_s": "exposed_forward_seconds", "exposed_backward_s": "exposed_backward_seconds",
           "memory_estimate_mb": "memory_estimate_mb", "o_error": "o_error",
           "forward_steps_computed": "forward_steps_computed", "forward_steps_skipped": "forward_steps_skipped",
           "backward_steps_computed": "backward_steps_computed", "backward_steps_skipped": "backward_steps_skipped",
           "forward_bytes_saved_per_rank": "forward_bytes_saved_per_rank",
           "backward_bytes_saved_per_rank": "backward_bytes_saved_per_rank", "work_pairs_min": "work_pairs_min",
           "work_pairs_max": "work_pairs_max", "forward_compute_min_s": "forward_compute_min_seconds",
           "forward_compute_max_s": "forward_compute_max_seconds", "backward_compute_min_s": "backward_compute_min_seconds",
           "backward_compute_max_s": "backward_compute_max_seconds"}
first = ["strategy", "ranks", "mask", "kv_heads", "seqlen", "forward_s", "backward_s", "forward_bytes_per_rank",
         "backward_bytes_per_rank", "exposed_forward_s", "exposed_backward_s", "memory_estimate_mb", "o_error", "skipped"]
check("the original columns come first, in order", header[:len(first)] == first, header)
numbers = reasons = integers = 0
bad_numbers, bad_reasons = [], []
bad_points = []
for row, point in zip(rows, points):
    r = dict(zip(header, row))
    # Every point, skipped or not, names its layout and documents.
    if (r["layout"], r["documents"], int(r["document_count"]), float(r["work_ratio"])) != (
            point["layout"], point["documents"], point["document_count"], point["work_ratio"]):
        bad_points.append((r["layout"], r["documents"], r["document_count"], r["work_ratio"]))
    if "skipped" in point:
        reasons += "," in point["skipped"]
        if r["skipped"] != point["skipped"]:
            bad_reasons.append((r["skipped"], point["skipped"]))
        continue
    for column, key in columns.items():
        text, want = r[column], point[key]
        numbers += 1
        if isinstance(want, int):
            integers += 1
            if not re.fullmatch(r"-?[0-9]+", text) or int(text) != want:
                bad_numbers.append((column, text, want))
        elif float(text) != want:
            bad_numbers.append((column, text, want))
check("CSV numbers equal bench.json's (integers as integers)", numbers > 0 and not bad_numbers, bad_numbers[:4])
check("the CSV has integral byte counts to compare", integers > 0, "no integral value among the points")
check("o_error in the CSV is not rounded to zero",
      all(float(dict(zip(header, r))["o_error"]) > 0 for r, p in zip(rows, points) if "skipped" not in p),
      [dict(zip(header, r))["o_error"] for r in rows])
check("layout, documents and work ratio read back on every row", not bad_points, bad_points[:3])
check("the sweep has packed points", any(p["document_count"] > 1 for p in points), "no point with documents")
check("skip reasons with commas read back whole", reasons > 0 and not bad_reasons, bad_reasons[:2] or "no reason with a comma")
PY
)
count_lines "$results"

finish
