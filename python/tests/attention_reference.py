"""The float64 torch reference the binding tests compare against, and the tolerance policy of
docs/numerics.md written out for it."""

import math

import torch

U = 2.0 ** -24  # fp32 unit roundoff
BF16_ROUNDING = 2.0 ** -8


def visible(n, causal, window, documents=None):
    """[n, n] bool: may query i attend to key j (global positions 0..n-1). documents: packed
    documents' offsets (cu_seqlens, 0 first, n last): the mask is block-diagonal over them."""
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    ok = torch.ones(n, n, dtype=torch.bool)
    if documents is not None:
        bounds = torch.as_tensor(documents, dtype=torch.int64)
        assert bounds[0] == 0 and bounds[-1] == n, f"documents {documents} do not cover {n} tokens"
        doc = torch.searchsorted(bounds, torch.arange(n), right=True) - 1
        ok &= doc.unsqueeze(1) == doc.unsqueeze(0)
    if causal:
        ok &= j <= i
    left, right = (-1, -1) if window is None else ((window, window) if isinstance(window, int) else window)
    if left >= 0:
        ok &= j >= i - left
    if right >= 0:
        ok &= j <= i + right
    return ok


def _scores(q, k, causal, window, scale, documents):
    """Masked scaled scores [b, hq, n, n] in float64; query head h reads kv head h // (hq // hkv)."""
    q, k = q.double(), k.double()
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    return scores.masked_fill(~visible(q.shape[1], causal, window, documents), float("-inf"))


def attention(q, k, v, causal=False, window=None, scale=None, documents=None):
    """Attention over the whole sequence in float64, differentiable by torch.
    q [b, n, hq, d], k and v [b, n, hkv, d]. Rows that see no key give 0."""
    v = v.double().repeat_interleave(q.shape[2] // v.shape[2], dim=2)
    probs = torch.softmax(_scores(q, k, causal, window, scale, documents), dim=-1)
    probs = probs.nan_to_num(0.0)  # all -inf rows: NaN -> 0
    return torch.einsum("bhqk,bkhd->bqhd", probs, v)


def lse(q, k, causal=False, window=None, scale=None, documents=None):
    """[b, hq, n] float64: log of the sum of exp(score) over the keys each query sees; -inf
    for a row that sees none."""
    return torch.logsumexp(_scores(q, k, causal, window, scale, documents), dim=-1)


def max_abs_score(q, k, scale=None):
    """Largest |scale q.k| over every head pair: S of the tolerance policy."""
    q, k = q.double(), k.double()
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    return torch.einsum("bqhd,bkhd->bhqk", q, k).abs().max().item() * scale


def forward_tolerance(d, seqlen_k, s_max, bf16=False):
    """2 u (d (1 + S) + sk), plus one bf16 rounding of the output when it is stored in bf16."""
    return 2 * U * (d * (1 + s_max) + seqlen_k) + (BF16_ROUNDING if bf16 else 0.0)


def backward_tolerance(d, seqlen_k, s_max, bf16=False):
    """4 u (d (1 + S) + sk + d). In bf16 two roundings add 2^-8 each: the output the backward
    reads for delta = rowsum(dO O) is bf16, and so is the gradient returned."""
    return 4 * U * (d * (1 + s_max) + seqlen_k + d) + (2 * BF16_ROUNDING if bf16 else 0.0)


def lse_tolerance(d, seqlen_k, s_max, lse_max):
    """Absolute error of lse: the relative error of the row sum (the forward's bound) plus
    one rounding of the logarithm, 2 u |lse|."""
    return forward_tolerance(d, seqlen_k, s_max) + 2 * U * lse_max


def lse_error(got, ref):
    """max |got - ref| over the rows both see keys in; inf when they disagree on which rows
    see none (-inf) or got has a NaN."""
    got = got.double()
    finite = torch.isfinite(ref)
    if torch.isnan(got).any() or not torch.equal(torch.isfinite(got), finite):
        return math.inf
    if not torch.equal(got[~finite], ref[~finite]):
        return math.inf
    return (got[finite] - ref[finite]).abs().max().item() if finite.any() else 0.0


def relative_error(got, ref, floor=0.0):
    """max |got - ref| / max(max |ref|, floor); inf when got has a NaN or infinity."""
    got = got.double()
    if not torch.isfinite(got).all():
        return math.inf
    scale = max(ref.abs().max().item(), floor)
    return (got - ref).abs().max().item() / scale if scale > 0 else (got - ref).abs().max().item()


def gradient_floors(q, k, v, dout, scale=None):
    """Floors of the gradient errors (docs/numerics.md): one dS K (dq) or dS Q (dk) term."""
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    m = lambda t: t.double().abs().max().item()  # noqa: E731
    return {"dq": scale * m(dout) * m(v) * m(k), "dk": scale * m(dout) * m(v) * m(q), "dv": 0.0}
