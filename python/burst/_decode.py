"""burst.KvCache: a KV cache sharded over the ranks, filled by a prefill of the prompt's shards
and grown by decoding (include/burst/decode.h, docs/decode.md)."""

import math

import torch

from . import _burst
from ._comm import resolve
from ._layout import DEFAULT_LAYOUT, LAYOUTS, MASK_LAYOUTS, MAX_SEQLEN, MAX_WINDOW, check_layout, int_argument, \
    real_argument
from ._ops import _check_tensor, _flag, _string
from ._sharding import Sharding

DECODE_STRATEGIES = ("burst", "tp", "ring")
_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


class KvCache:
    """One rank's share of the K/V of `batch` sequences for one attention layer, over the ranks
    of `group` (a torch.distributed gloo group) or `comm` (an mpi4py communicator or a
    burst.Communicator), or a burst.Sharding; none: this process alone.

        cache = burst.KvCache(b, n_heads_kv, head_dim, torch.float32, group=dist.group.WORLD)
        out = cache.prefill(q, k, v)          # this rank's prompt shards (zigzag), causal
        out = cache.extend(q1, k1, v1)        # [b, 1, h, d] new token, the same on every rank

    strategy: "burst" (each rank holds ~1/P of the tokens; a decode step merges the ranks'
    partial results in one log2 P all-reduce, independent of the context), "tp" (kv heads
    split over the ranks; fill it with extend, not prefill) or "ring" (a baseline that moves
    the cache). dtype: torch.float32 or torch.bfloat16, the dtype of every k and v given.
    window_left: a token at position p sees keys p - window_left .. p (None: the whole past).
    softmax_scale: default 1/sqrt(head_dim). threads: kernel threads of this rank. capacity:
    tokens of this rank reserved up front (the cache grows past it).

    extend's result is bitwise the same on every rank (burst and tp), so a model decoding on
    every rank picks the same next token everywhere. Every rank must make the same calls.
    Bad arguments raise ValueError naming them (TypeError for a wrong type), before any
    communication; communication failures raise burst.CommError."""

    def __init__(self, batch, n_heads_kv, head_dim, dtype=torch.float32, *, group=None, comm=None, sharding=None,
                 strategy="burst", window_left=None, softmax_scale=None, threads=1, capacity=0):
        batch = int_argument("batch", batch, 1, MAX_SEQLEN)
        n_heads_kv = int_argument("n_heads_kv", n_heads_kv, 1, 2**31 - 1)
        head_dim = int_argument("head_dim", head_dim, 1, 2**31 - 1)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16, got {dtype!r}")
        strategy = _string("strategy", strategy)
        if strategy not in DECODE_STRATEGIES:
            raise ValueError(f"strategy: expected one of {', '.join(DECODE_STRATEGIES)}, got '{strategy}'")
        window_left = -1 if window_left is None else int_argument("window_left", window_left, 0, MAX_WINDOW)
        if softmax_scale is not None:
            softmax_scale = real_argument("softmax_scale", softmax_scale)
            if not math.isfinite(softmax_scale):
                raise ValueError(f"softmax_scale: expected a finite number, got {softmax_scale}")
        threads = int_argument("threads", threads, 1, _burst.max_threads)
        capacity = int_argument("capacity", capacity, 0, MAX_SEQLEN)
        if sharding is not None:
            if not isinstance(sharding, Sharding):
                raise TypeError(f"sharding: expected a burst.Sharding, got {type(sharding).__name__}")
            if group is not None or comm is not None:
                raise ValueError("sharding: pass the sharding alone, or group/comm instead of it")
            self.communicator = sharding.communicator
        else:
            self.communicator = resolve(group, comm)
        self.sharding = sharding
        self.dtype = dtype
        self.batch, self.n_heads_kv, self.head_dim = batch, n_heads_kv, head_dim
        self.last_stats = {}  # what the latest prefill or extend did on this rank
        self._impl = _burst.KvCache(self.communicator._impl, strategy, batch, n_heads_kv, head_dim, _DTYPES[dtype],
                                    capacity, window_left, softmax_scale, threads)

    def _inputs(self, q, k, v, what):
        for t, name in ((q, "q"), (k, "k"), (v, "v")):
            _check_tensor(t, name)
            if t.dtype != self.dtype:
                raise ValueError(f"{name}: expected the cache's dtype {self.dtype}, got {t.dtype}")
        if q.shape[0] != self.batch or q.shape[3] != self.head_dim or q.shape[2] % self.n_heads_kv != 0:
            raise ValueError(f"q: expected [{self.batch}, {what}, a multiple of {self.n_heads_kv} heads, "
                             f"{self.head_dim}], got {list(q.shape)}")
        for t, name in ((k, "k"), (v, "v")):
            expected = [self.batch, q.shape[1], self.n_heads_kv, self.head_dim]
            if list(t.shape) != expected:
                raise ValueError(f"{name}: expected shape {expected}, got {list(t.shape)}")
        return q.contiguous(), k.contiguous(), v.contiguous()

    def prefill(self, q, k, v, *, layout=None, seqlen=None, return_lse=False):
        """Causal attention of a prompt on an empty cache, whose K/V stay in the cache: q
        [b, s_local, n_heads_q, d], k and v [b, s_local, n_heads_kv, d] are this rank's shards
        (positions 0 .. seqlen - 1) in `layout` (the sharding's, else "zigzag"), as for
        burst.attention. Returns out [b, s_local, n_heads_q, d] in q's dtype (with
        return_lse=True, (out, lse [b, n_heads_q, s_local] fp32)). seqlen: default the sum of
        the ranks' shard lengths (one small collective). Not differentiable. Collective."""
        return_lse = _flag("return_lse", return_lse)
        q, k, v = self._inputs(q, k, v, "s_local")
        if layout is not None:
            check_layout(layout)
            if self.sharding is not None and layout != self.sharding.layout:
                raise ValueError(f"layout: '{layout}' disagrees with the sharding's layout "
                                 f"'{self.sharding.layout}'; pass the sharding alone")
        else:
            layout = self.sharding.layout if self.sharding is not None else DEFAULT_LAYOUT
        if layout in MASK_LAYOUTS:
            raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)} for a prefill (the cache places a "
                             f"prompt by its length alone), got '{layout}'")
        if seqlen is None:
            seqlen = sum(self.communicator._impl.all_gather_int(q.shape[1]))
        seqlen = int_argument("seqlen", seqlen, 1, MAX_SEQLEN)
        b, s, h, _ = q.shape
        # NaN-filled, so an element the library failed to write cannot pass for a result.
        out = torch.full(q.shape, float("nan"), dtype=q.dtype)
        lse = torch.full((b, h, s), float("nan"), dtype=torch.float32)
        with torch.no_grad():
            self.last_stats = {"prefill": self._impl.prefill(q, k, v, out, lse, layout, seqlen)}
        return (out, lse) if return_lse else out

    def extend(self, q, k, v, *, return_lse=False):
        """Appends C new tokens at positions size .. size + C - 1 and attends their queries to
        the whole cache, causally: q [b, C, n_heads_q, d], k and v [b, C, n_heads_kv, d], the
        same on every rank (each rank keeps the rows it owns). C = 1 is a decode step. Returns
        out [b, C, n_heads_q, d] float32 (with return_lse=True, (out, lse [b, n_heads_q, C])),
        bitwise alike on every rank for burst and tp. Not differentiable. Collective."""
        return_lse = _flag("return_lse", return_lse)
        q, k, v = self._inputs(q, k, v, "C")
        b, c, h, _ = q.shape
        out = torch.full((b, c, h, q.shape[3]), float("nan"), dtype=torch.float32)
        lse = torch.full((b, h, c), float("nan"), dtype=torch.float32)
        with torch.no_grad():
            self.last_stats = {"extend": self._impl.extend(q, k, v, out, lse)}
        return (out, lse) if return_lse else out

    def expected_bytes(self, tokens, n_heads_q):
        """Bytes this rank sends in the next extend of `tokens` tokens with n_heads_q query heads,
        by the library's formula (last_stats["extend"]["bytes_sent"] after the call)."""
        tokens = int_argument("tokens", tokens, 1, MAX_SEQLEN)
        n_heads_q = int_argument("n_heads_q", n_heads_q, 1, 2**31 - 1)
        return self._impl.extend_bytes(tokens, n_heads_q)

    @property
    def strategy(self):
        return self._impl.strategy

    @property
    def size(self):
        """Tokens of every sequence in the cache, over all ranks."""
        return self._impl.size

    @property
    def local_size(self):
        """Tokens this rank holds."""
        return self._impl.local_size

    @property
    def bytes(self):
        """Bytes of K/V this rank holds."""
        return self._impl.bytes

    @property
    def local_positions(self):
        """Global positions of this rank's tokens, in cache order."""
        return torch.tensor(self._impl.local_positions, dtype=torch.int64)

    @property
    def tokens_per_rank(self):
        return list(self._impl.tokens_per_rank)

    def __repr__(self):
        c = self.communicator
        return (f"burst.KvCache({self.strategy}, {self.size} tokens, {self.local_size} on rank {c.rank} of "
                f"{c.world_size}, {self.bytes} bytes)")
