#!/usr/bin/env python3
"""Checks the bytes each rank of a `burst run --strategy burst --backward --bwd-scheme q` sent
to ranks of its own node and of other nodes (the point-to-point counts of its --json report)
against BurstAttention's ring formulas, exactly. Equal shards are assumed (seqlen divisible by
2P for zigzag), MHA or GQA, the query-bundle backward.

  check_links.py REPORT.json single|double

Shard sizes per rank: S = 2 b n G d e (K and V), bundle Q = b n H (2 d e + 8) (Q, dO, lse,
delta), accumulator A = 4 b n H d (fp32 dQ), n = seqlen / P.
- single ring: rank r sends everything to r + 1: forward (P - 1) S, backward (P - 1) Q + P A,
  all on the class of the link to r + 1.
- double ring, I nodes of L ranks: forward inter (I - 1) S, intra I (L - 1) S; backward
  inter (I - 1)(Q + A), intra I (L - 1)(Q + A) + A (the node-0 partial home, which is a send
  to the rank itself when L = 1 and then counts in neither class).
"""
import json
import sys


def expected(report, ring):
    d = report["distributed"]
    nodes = d["node_of_rank"]
    p = len(nodes)
    n = report["seqlen_q"] // p
    b, h, g, dim = report["batch"], report["heads"], report["kv_heads"], report["head_dim"]
    e = 4 if report["dtype"] == "fp32" else 2
    s = 2 * b * n * g * dim * e
    q = b * n * h * (2 * dim * e + 8)
    a = 4 * b * n * h * dim
    out = {}
    for r in range(p):
        if ring == "single":
            cls = "intra" if nodes[(r + 1) % p] == nodes[r] else "inter"
            fwd = {"intra": 0, "inter": 0}
            bwd = {"intra": 0, "inter": 0}
            fwd[cls] = (p - 1) * s
            bwd[cls] = (p - 1) * q + p * a
        else:
            i = max(nodes) + 1
            l = p // i
            fwd = {"intra": i * (l - 1) * s, "inter": (i - 1) * s}
            bwd = {"intra": i * (l - 1) * (q + a) + (a if l > 1 else 0), "inter": (i - 1) * (q + a)}
        out[r] = (fwd, bwd)
    return out


def main():
    path, ring = sys.argv[1], sys.argv[2]
    report = json.load(open(path))
    d = report["distributed"]
    assert report["seqlen_q"] % (2 * len(d["node_of_rank"])) == 0, "seqlen must be a multiple of 2P"
    assert d["backward_scheme"] == "q", f"expected the query-bundle backward, got {d['backward_scheme']}"
    failures = 0
    for r, (fwd, bwd) in expected(report, ring).items():
        for pass_name, want in (("forward", fwd), ("backward", bwd)):
            for cls in ("intra", "inter"):
                got = d[f"{pass_name}_point_to_point_bytes_{cls}_node_by_rank"][r]
                total = d[f"{pass_name}_bytes_{cls}_node_by_rank"][r]
                status = "ok" if got == want[cls] and total >= got else "MISMATCH"
                failures += status != "ok"
                print(f"links: {ring} ring, rank {r} (node {d['node_of_rank'][r]}), {pass_name} {cls}-node: "
                      f"{int(got)} bytes point-to-point (formula {want[cls]}), {int(total)} with collectives  {status}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
