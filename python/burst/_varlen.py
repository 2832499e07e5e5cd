"""flash-attn's varlen call shape over Burst: packed tokens [total, h, d] with cu_seqlens."""

import torch

from ._layout import cu_seqlens_argument
from ._ops import _attention


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                     softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                     deterministic=False, return_attn_probs=False, block_table=None, *, return_lse=False,
                     **burst_options):
    """Attention over packed documents in flash-attn's flash_attn_varlen_func call shape, so a
    call ports by changing the import: q [total, n_heads_q, d], k and v [total, n_heads_kv, d]
    (the documents' tokens back to back), cu_seqlens_q and cu_seqlens_k their D + 1 offsets,
    max_seqlen_q and max_seqlen_k at least the longest document; returns out [total,
    n_heads_q, d] (with return_lse=True, (out, lse [n_heads_q, total])).

    Self-attention only: cu_seqlens_q and cu_seqlens_k must hold the same offsets (Burst's
    documents are one set of boundaries for queries and keys). Across ranks, pass this rank's
    shard of the packed tokens ([total_local, h, d], from a burst.Sharding with these
    documents) and sharding= (or group= / comm= with layout=), and the GLOBAL offsets: every
    keyword of burst.attention after the flash-attn ones is accepted. Refused with ValueError,
    naming the argument: dropout_p != 0, softcap != 0, alibi_slopes, block_table,
    return_attn_probs=True (Burst never materialises the probabilities; use return_lse).
    deterministic is accepted and ignored: Burst's results are always bitwise reproducible.
    """
    for name, value, default in (("dropout_p", dropout_p, 0.0), ("softcap", softcap, 0.0)):
        if value != default:
            raise ValueError(f"{name}: expected {default} (Burst has no {name.split('_')[0]}), got {value!r}")
    for name, value in (("alibi_slopes", alibi_slopes), ("block_table", block_table)):
        if value is not None:
            raise ValueError(f"{name}: expected None (not supported by Burst), got a {type(value).__name__}")
    if return_attn_probs:
        raise ValueError("return_attn_probs: expected False (Burst never materialises the attention "
                         "probabilities; return_lse=True gives the log-sum-exp), got True")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a [total, heads, head_dim] tensor (flash-attn's varlen layout), "
                             f"got {shape}")
    cu_q = cu_seqlens_argument(cu_seqlens_q, "cu_seqlens_q")
    cu_k = cu_seqlens_argument(cu_seqlens_k, "cu_seqlens_k")
    if cu_q is None or cu_k is None:
        raise ValueError("cu_seqlens_q, cu_seqlens_k: expected the documents' offsets, got None")
    if cu_q != cu_k:
        raise ValueError("cu_seqlens_k: expected the offsets of cu_seqlens_q (Burst runs self-attention over "
                         f"packed documents), got {list(cu_k[:8])}{'...' if len(cu_k) > 8 else ''} against "
                         f"{list(cu_q[:8])}{'...' if len(cu_q) > 8 else ''}")
    longest = max(b - a for a, b in zip(cu_q, cu_q[1:]))
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < longest:
            raise ValueError(f"{name}: expected an int >= the longest document ({longest} tokens), got {value!r}")
    window = None if tuple(window_size) == (-1, -1) else tuple(window_size)
    result = _attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), softmax_scale=softmax_scale, causal=causal,
                        window_size=window, cu_seqlens=cu_q, return_lse=return_lse, **burst_options)
    if return_lse:
        out, lse = result
        return out.squeeze(0), lse.squeeze(0)
    return result.squeeze(0)
