"""nn.Module forms of Burst: BurstAttention (the attention core on shards) and
AttentionLayer (projections, rotary embeddings at global positions, or at positions within
each document when cu_seqlens packs documents, the core, output projection), for models whose
sequence is sharded over the ranks of a group."""

import math

import torch
from torch import nn

from ._layout import DEFAULT_LAYOUT, INT_MAX, int_argument, real_argument
from ._ops import _attention, _flag, _window_sides
from ._sharding import Sharding


def _sharding(sharding, group, comm, layout, causal, window_size):
    """The module's sharding: the one given, or one made of group/comm and layout with the
    module's mask (which doc-zigzag and balanced place tokens by)."""
    if sharding is not None:
        if not isinstance(sharding, Sharding):
            raise TypeError(f"sharding: expected a burst.Sharding, got {type(sharding).__name__}")
        if group is not None or comm is not None or layout is not None:
            raise ValueError("sharding: pass the sharding alone, or group/comm and layout instead of it")
        return sharding
    if group is not None and comm is not None:
        raise ValueError(f"group and comm: expected one of them, got group={group!r} and comm={comm!r}")
    return Sharding(group if group is not None else comm, DEFAULT_LAYOUT if layout is None else layout,
                    causal=causal, window_size=window_size)


def _batch_sharding(sharding, cu_seqlens):
    """The sharding of one call: `sharding`, or with a batch's documents when it holds none
    (cu_seqlens given to forward)."""
    if cu_seqlens is None or sharding._mask.documents is not None:
        return sharding
    return sharding.with_documents(cu_seqlens)


class BurstAttention(nn.Module):
    """Attention over the whole sequence for this rank's shards: forward(q, k, v) with q
    [b, s_local, n_heads_q, d], k and v [b, s_local, n_heads_kv, d] (the layout's local
    order) returns [b, s_local, n_heads_q, d], or (out, lse) with return_lse=True.

    group (a torch.distributed ProcessGroup) or comm (an mpi4py communicator or a
    burst.Communicator) with layout ("zigzag" by default), or a burst.Sharding holding both;
    none: this process alone. The other arguments are burst.attention's. Making the module
    over a group is collective the first time that group is used. No parameters.

    Packed documents: forward(..., cu_seqlens=) takes each batch's offsets (burst.attention's
    cu_seqlens), unless the sharding holds them. With layout doc-zigzag or balanced the
    inputs must then be shards of module.sharding.with_documents(cu_seqlens)."""

    def __init__(self, group=None, *, layout=None, strategy="burst", causal=False, softmax_scale=None,
                 window_size=None, sharding=None, comm=None, backward_scheme="auto", ulysses_degree=1, threads=1):
        super().__init__()
        sides = _window_sides(window_size, None)  # checked now rather than at the first call
        self.sharding = _sharding(sharding, group, comm, layout, causal, window_size)
        self.sharding._call_documents(_flag("causal", causal), sides, None)  # a mask-reading layout's mask
        self.options = dict(strategy=strategy, causal=causal, softmax_scale=softmax_scale, window_size=window_size,
                            backward_scheme=backward_scheme, ulysses_degree=ulysses_degree, threads=threads)

    def forward(self, q, k, v, *, cu_seqlens=None, seqlen=None, return_lse=False):
        return _attention(q, k, v, sharding=_batch_sharding(self.sharding, cu_seqlens), cu_seqlens=cu_seqlens,
                          seqlen=seqlen, return_lse=return_lse, **self.options)

    def extra_repr(self):
        o = self.options
        return (f"layout={self.sharding.layout}, ranks={self.sharding.world_size}, strategy={o['strategy']}, "
                f"causal={o['causal']}")


def rotate(x, positions, base):
    """Rotary embedding of x [b, s, h, d] for tokens at global `positions` [s]: each pair
    (x[j], x[j + d/2]) turns by positions * base^(-2j/d), as the library's layer does
    (include/burst/linear.h). Angles in float64: positions reach 10^6, where fp32 angles lose
    the phase."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / x.shape[-1])
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [s, d/2]
    cos = angles.cos().to(x.dtype)[None, :, None, :]
    sin = angles.sin().to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class AttentionLayer(nn.Module):
    """The attention layer of a sequence-parallel transformer on this rank's tokens:
    Q = x Wq, K = x Wk, V = x Wv (n_heads query and n_kv_heads key/value heads of head_dim),
    Q and K rotated at their GLOBAL positions, O = attention over the whole sequence (Burst),
    y = O Wo. forward(x) with x [b, s_local, dim] in the sharding's local order returns
    [b, s_local, dim]. The same math as the library's layer (burst/layer.h), with the
    projections as torch modules: every rank's weight gradients are its own tokens' share,
    summed over the ranks by whatever all-reduces the rest of the model's gradients.

    group/comm with layout, or sharding: as BurstAttention. rope_base 0 turns the rotary
    embedding off. causal defaults to True (a decoder). Packed documents (forward's
    cu_seqlens, or the sharding's): attention stays inside each document and the rotary
    positions restart at 0 in each, so a packed batch computes what its documents would one
    by one."""

    def __init__(self, dim, n_heads, n_kv_heads=None, *, head_dim=None, group=None, layout=None, sharding=None,
                 comm=None, strategy="burst", causal=True, window_size=None, rope_base=10000.0, bias=False,
                 threads=1):
        super().__init__()
        dim = int_argument("dim", dim, 1, INT_MAX)
        n_heads = int_argument("n_heads", n_heads, 1, INT_MAX)
        n_kv_heads = n_heads if n_kv_heads is None else int_argument("n_kv_heads", n_kv_heads, 1, n_heads)
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_kv_heads: expected a divisor of n_heads ({n_heads}), got {n_kv_heads}")
        if head_dim is None:
            if dim % n_heads != 0:
                raise ValueError(f"head_dim: expected it given, as dim ({dim}) is not a multiple of n_heads "
                                 f"({n_heads})")
            head_dim = dim // n_heads
        head_dim = int_argument("head_dim", head_dim, 1, INT_MAX)
        self.rope_base = real_argument("rope_base", rope_base)
        if self.rope_base != 0.0 and not (self.rope_base > 1.0 and math.isfinite(self.rope_base)):
            raise ValueError(f"rope_base: expected 0 (no rotary embedding) or a finite number > 1, got {rope_base}")
        if self.rope_base != 0.0 and head_dim % 2 != 0:
            raise ValueError(f"head_dim: expected an even number for the rotary embedding, got {head_dim}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.attention = BurstAttention(sharding=_sharding(sharding, group, comm, layout, causal, window_size),
                                        strategy=strategy, causal=causal, window_size=window_size, threads=threads)
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=bias)
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=bias)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=bias)
        self._positions = {}

    @property
    def sharding(self):
        return self.attention.sharding

    def forward(self, x, *, cu_seqlens=None, seqlen=None):
        """y for x [b, s_local, dim]; seqlen: the global length (default: the sum of the
        ranks' lengths, one small collective); cu_seqlens: this batch's packed documents
        (BurstAttention.forward's)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"x: expected a [b, s_local, dim] tensor, got "
                             f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        b, s, _ = x.shape
        sharding = _batch_sharding(self.sharding, cu_seqlens)
        if seqlen is None:
            seqlen = sharding.seqlen(s)
        q = self.wq(x).view(b, s, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, s, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim)
        if self.rope_base != 0.0:
            if sharding._mask.documents is None:
                positions = self._positions.get(seqlen)
                if positions is None:
                    positions = self._positions[seqlen] = sharding.positions(seqlen)
            else:  # a batch's own documents: not cached, as every batch may bring others
                positions = sharding.document_positions(seqlen)
            if len(positions) != s:
                raise ValueError(f"x: expected {len(positions)} tokens on rank {sharding.rank} "
                                 f"({sharding.layout} layout of {seqlen} over {sharding.world_size} "
                                 f"ranks), got {s}")
            q, k = rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base)
        o = self.attention(q, k, v, cu_seqlens=cu_seqlens, seqlen=seqlen)
        return self.wo(o.reshape(b, s, self.n_heads * self.head_dim))
