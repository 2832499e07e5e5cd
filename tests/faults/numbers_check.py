"""Inputs and checks for numbers.sh: non-finite inputs reach exactly the outputs that depend on them.

  numbers_check.py make DIR SEED               writes DIR/{q,k,v,do}.npy, finite
  numbers_check.py plant DIR NAME ROW HEAD X VALUE
                                               sets one element of DIR/NAME.npy (VALUE nan, inf, -inf)
  numbers_check.py check DIR OUT MASK [bf16]   compares burst run --save OUT with a float64
                                               reference; MASK is causal, full or L,R (a window)

The reference sums over visible pairs only, in IEEE arithmetic (docs/numerics.md, "Non-finite
inputs"): a NaN or an infinity reaches an output exactly when the output's formula holds it
through a visible pair. Positions of NaN, +inf and -inf must match exactly; finite values must
agree to a normwise relative 1e-4 (2e-2 with bf16 storage). Exits 1 with a description if not.
"""
import sys

import numpy as np

S, H, D = 96, 2, 16


def make(directory, seed):
    rng = np.random.default_rng(int(seed))
    for name in ("q", "k", "v", "do"):
        np.save(f"{directory}/{name}.npy", rng.standard_normal((1, S, H, D)).astype(np.float32))


def plant(directory, name, row, head, x, value):
    a = np.load(f"{directory}/{name}.npy")
    a[0, int(row), int(head), int(x)] = np.float32(value)
    np.save(f"{directory}/{name}.npy", a)


def to_bf16(a):
    """Rounds float32 values to bf16 (nearest even), as burst's --dtype bf16 stores them."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(a), a, out)


def visible_fn(mask):
    if mask == "causal":
        return lambda i, j: j <= i
    if mask == "full":
        return lambda i, j: True
    left, right = (int(t) for t in mask.split(","))
    return lambda i, j: (left < 0 or j >= i - left) and (right < 0 or j <= i + right)


def reference(q, k, v, do, visible):
    """Forward and backward in float64 over visible pairs only; a row with no score above -inf
    has O = 0 and lse = -inf."""
    b, s, h, d = q.shape
    group = h // k.shape[2]
    scale = 1.0 / np.sqrt(d)
    o = np.zeros_like(q)
    lse = np.full((b, h, s), -np.inf)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(k)
    with np.errstate(all="ignore"):
        for ih in range(h):
            kv = ih // group
            for i in range(s):
                cols = [j for j in range(k.shape[1]) if visible(i, j)]
                if not cols:
                    continue
                kr, vr, qi, gi = k[0, cols, kv], v[0, cols, kv], q[0, i, ih], do[0, i, ih]
                sc = scale * np.sum(kr * qi, axis=1)
                m = np.max(sc)  # propagates NaN
                if m == -np.inf:
                    p = np.zeros_like(sc)
                    delta = np.sum(gi * 0.0)
                else:
                    e = np.exp(sc - m)
                    total = np.sum(e)
                    p = e / total
                    lse[0, ih, i] = m + np.log(total)
                    o[0, i, ih] = np.sum(p[:, None] * vr, axis=0)
                    delta = np.sum(gi * o[0, i, ih])
                dp = np.sum(vr * gi, axis=1)
                ds = p * (dp - delta)
                dq[0, i, ih] = scale * np.sum(ds[:, None] * kr, axis=0)
                dk[0, cols, kv] += scale * ds[:, None] * qi[None, :]
                dv[0, cols, kv] += p[:, None] * gi[None, :]
    return {"o": o, "lse": lse, "dq": dq, "dk": dk, "dv": dv}


def kind(a):
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    return np.select([np.isnan(a), a == np.inf, a == -np.inf], [1, 2, 3], 0)


def check(directory, out, mask, bf16=False):
    inputs = [np.load(f"{directory}/{n}.npy").astype(np.float64) for n in ("q", "k", "v", "do")]
    if bf16:
        inputs = [to_bf16(a.astype(np.float32)).astype(np.float64) for a in inputs]
    ref = reference(*inputs, visible_fn(mask))
    tol = 2e-2 if bf16 else 1e-4
    problems = []
    reached = 0
    for name, want in ref.items():
        got = np.load(f"{out}/{name}.npy").astype(np.float64)
        if got.shape != want.shape:
            problems.append(f"{name}: shape {got.shape}, expected {want.shape}")
            continue
        kg, kw = kind(got), kind(want)
        wrong = np.argwhere(kg != kw)
        if len(wrong):
            names = ["finite", "nan", "+inf", "-inf"]
            first = tuple(int(t) for t in wrong[0])
            problems.append(f"{name}: {len(wrong)} positions differ in kind, first {first}: "
                            f"{names[kg[first]]} ({got[first]:.4g}), reference {names[kw[first]]}")
            continue
        reached += int(np.count_nonzero(kw))
        fin = kw == 0
        if not fin.any():
            continue
        diff = np.max(np.abs(got[fin] - want[fin]))
        scale = max(np.max(np.abs(want[fin])), 1e-30)
        if diff / scale > tol:
            problems.append(f"{name}: relative error {diff / scale:.3g} > {tol}")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok: {reached} non-finite outputs, all where the reference has them")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(*args)
    elif cmd == "plant":
        plant(*args)
    elif cmd == "check":
        sys.exit(check(args[0], args[1], args[2], len(args) > 3 and args[3] == "bf16"))
    else:
        sys.exit(f"unknown command {cmd}")
