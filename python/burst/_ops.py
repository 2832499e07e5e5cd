"""burst.attention: exact distributed attention as a PyTorch autograd op, called like
flash-attn's flash_attn_func where the two share a meaning."""

import functools
import inspect
import math

import torch
from torch.autograd.function import once_differentiable

from . import _burst
from ._comm import resolve
from ._layout import DEFAULT_LAYOUT, INT_MAX, MAX_SEQLEN, Mask, check_layout, check_total, \
    cu_seqlens_argument, flag, int_argument, real_argument, shard_plan, window_sides
from ._sharding import Sharding

STRATEGIES = _burst.strategies


def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name}: expected 4 dimensions [b, s, h, d], got shape {list(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected every dimension of [b, s, h, d] to be at least 1, got shape {list(t.shape)}")


# The older private names, which nn.py and _decode.py import.
_window_sides = window_sides
_flag = flag


def _string(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__} {value!r}")
    return value


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, settings, comm):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, s, h, _ = q.shape
        # NaN-filled, so an element the library failed to write cannot pass for a result.
        out = torch.full(q.shape, float("nan"), dtype=q.dtype)
        lse = torch.full((b, h, s), float("nan"), dtype=torch.float32)
        comm.last_stats = {"forward": _burst.forward(comm._impl, settings, q, k, v, out, lse)}
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings, ctx.comm = settings, comm
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.to(q.dtype).contiguous()
        dq = torch.full(q.shape, float("nan"), dtype=torch.float32)
        dk = torch.full(k.shape, float("nan"), dtype=torch.float32)
        dv = torch.full(v.shape, float("nan"), dtype=torch.float32)
        ctx.comm.last_stats["backward"] = _burst.backward(ctx.comm._impl, ctx.settings, q, k, v, out, lse, dout, dq,
                                                          dk, dv)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def _prepare(q, k, v, softmax_scale, causal, window_size, dropout_p, sharding, group, comm, layout, strategy,
             seqlen, backward_scheme, ulysses_degree, threads, scale, window, cu_seqlens):
    """Checks attention's arguments; returns the call's settings, communicator, layout, global
    length and mask."""
    # Every argument is checked before the first collective, so a bad one fails alike on
    # every rank instead of leaving the others waiting.
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        _check_tensor(t, name)
    causal = flag("causal", causal)
    if real_argument("dropout_p", dropout_p) != 0.0:
        raise ValueError(f"dropout_p: expected 0.0 (Burst has no attention dropout), got {dropout_p!r}")
    left, right = window_sides(window_size, window)
    documents = cu_seqlens_argument(cu_seqlens)
    if softmax_scale is not None and scale is not None:
        raise ValueError(f"softmax_scale and scale: expected one of them (scale is the older name), got "
                         f"softmax_scale={softmax_scale!r} and scale={scale!r}")
    scale_name = "softmax_scale" if softmax_scale is not None else "scale"
    scale = softmax_scale if softmax_scale is not None else scale
    if scale is not None:
        scale = real_argument(scale_name, scale)
        if not math.isfinite(scale):
            raise ValueError(f"{scale_name}: expected a finite number, got {scale}")
    threads = int_argument("threads", threads, 1, _burst.max_threads)
    ulysses_degree = int_argument("ulysses_degree", ulysses_degree, 1, INT_MAX)
    if seqlen is not None:
        seqlen = int_argument("seqlen", seqlen, 1, MAX_SEQLEN)
    for name, value in (("strategy", strategy), ("backward_scheme", backward_scheme)):
        _string(name, value)
    if layout is not None:
        check_layout(layout)
    if sharding is not None:
        if not isinstance(sharding, Sharding):
            raise TypeError(f"sharding: expected a burst.Sharding, got {type(sharding).__name__}")
        if layout is not None and layout != sharding.layout:
            raise ValueError(f"layout: '{layout}' disagrees with the sharding's layout '{sharding.layout}'; pass "
                             f"the sharding alone")
        c = sharding.communicator
        if (group is not None or comm is not None) and resolve(group, comm) is not c:
            raise ValueError("group/comm: not the communicator of the sharding; pass the sharding alone")
        layout = sharding.layout
        documents = sharding._call_documents(causal, (left, right), documents)
    else:
        c = resolve(group, comm)
        layout = DEFAULT_LAYOUT if layout is None else layout
    if seqlen is not None:
        check_total(documents, seqlen, "the seqlen argument")
    else:
        # Every rank gets the same sum, so a cu_seqlens that misses it fails alike on all.
        seqlen = sum(c._impl.all_gather_int(q.shape[1]))
        check_total(documents, seqlen, "the sum of the ranks' shard lengths")
    mask = Mask(causal, (left, right), documents)
    settings = _burst.make_settings(strategy=strategy, layout=layout, seqlen=seqlen, causal=causal,
                                    window_left=left, window_right=right, scale=scale,
                                    backward_scheme=backward_scheme, ulysses_degree=ulysses_degree,
                                    threads=threads, documents=mask.arguments()["documents"])
    return settings, c, layout, seqlen, mask


def _attention(q, k, v, *, softmax_scale=None, causal=False, window_size=None, cu_seqlens=None, return_lse=False,
               dropout_p=0.0, sharding=None, group=None, comm=None, layout=None, strategy="burst", seqlen=None,
               backward_scheme="auto", ulysses_degree=1, threads=1, scale=None, window=None):
    """Returns softmax(softmax_scale q k^T, masked) v over the whole sequence, for this rank's
    queries; with return_lse=True, (out, lse).

    q [b, s_local, n_heads_q, d], k and v [b, s_local, n_heads_kv, d]: this rank's shards in
    the layout's local order (Sharding.shard makes them), float32 or bfloat16, on the CPU;
    n_heads_q a multiple of n_heads_kv (grouped-query attention). out is shaped and typed like
    q; its backward runs the distributed backward and yields gradients in the inputs' dtypes.
    lse [b, n_heads_q, s_local] float32 is the natural log of the sum of exp(scores) of each
    query row (-inf for a row that sees no key), not differentiable. Arithmetic is fp32.

    Every argument after v is keyword-only. As in flash-attn: softmax_scale (default
    1/sqrt(d)), causal (key position <= query position, in global positions), window_size
    (left, right): keys from position i - left to i + right, -1 for an unbounded side (None
    or (-1, -1): no window), return_lse, dropout_p (0 only: Burst has no dropout).
    cu_seqlens: packed documents as flash-attn's varlen functions take them, D + 1 GLOBAL
    offsets (0 first, increasing, the global sequence length last; a CPU int32/int64 tensor or
    a sequence of ints), the same on every rank whatever its shard; a query sees only keys of
    its own document, on top of causal and the window. The same documents for every batch
    row (flash-attn's varlen packs the batch into one row: b = 1 here). Default: the
    sharding's, else one document.
    The ranks: sharding (a burst.Sharding: communicator, layout and documents together, the
    safe way), or group (a torch.distributed ProcessGroup) / comm (an mpi4py communicator or
    a burst.Communicator) with layout ("zigzag" by default, "contiguous", "striped",
    "doc-zigzag", "balanced") for shards made some other way; none of them: this process
    alone. doc-zigzag and balanced place tokens by the mask: with sharding=, the call's
    causal, window and cu_seqlens must be the sharding's.
    strategy: one of burst.STRATEGIES (burst, ring, ring-rsa, ulysses, usp, allgather, local;
    ring-rsa refuses packed documents).
    seqlen: the global length (default: the sum of the ranks' shard lengths, one small
    collective). backward_scheme (burst): auto, q (BurstAttention's) or kv (RingAttention's).
    ulysses_degree (usp): ranks per Ulysses group. threads: kernel threads of this rank.
    scale and window: the older names of softmax_scale and window_size (window may be an int
    w for (w, w)). Every rank of the communicator must make the same calls.

    Arguments are checked before any communication: a bad one raises ValueError naming it,
    the expected and the actual value (TypeError for a wrong type); communication failures
    raise burst.CommError (burst.CommTimeoutError past the deadline).
    """
    return_lse = flag("return_lse", return_lse)
    settings, c, _, _, _ = _prepare(q, k, v, softmax_scale, causal, window_size, dropout_p, sharding, group, comm,
                                    layout, strategy, seqlen, backward_scheme, ulysses_degree, threads, scale, window,
                                    cu_seqlens)
    out, lse = _Attention.apply(q, k, v, settings, c)
    return (out, lse) if return_lse else out


@functools.wraps(_attention)
def attention(q, k, v, *positional, **options):
    if positional:
        raise TypeError(f"attention: every argument after v is keyword-only (softmax_scale=, causal=, "
                        f"window_size=, ...), got {len(positional)} more positional: {positional!r}. Positional "
                        f"arguments are refused so that a call ported from flash-attn (dropout_p, softmax_scale, "
                        f"causal) or from an older burst (causal, window, scale) cannot change meaning silently")
    return _attention(q, k, v, **options)


attention.__signature__ = inspect.signature(_attention)


def expected_bytes(q, k, v, *, softmax_scale=None, causal=False, window_size=None, cu_seqlens=None, dropout_p=0.0,
                   sharding=None, group=None, comm=None, layout=None, strategy="burst", seqlen=None,
                   backward_scheme="auto", ulysses_degree=1, threads=1, scale=None, window=None):
    """Returns {"forward": ..., "backward": ...}: the bytes this rank sends in one forward and
    one backward of burst.attention called with the same arguments, by the strategy's byte
    formula (the library's strategy table, as the CLI and the planner read it). Both figures
    include what a ring spares under a mask (Communicator.last_stats: bytes_sent +
    bytes_saved). Collective when seqlen is not given."""
    settings, c, layout, n, mask = _prepare(q, k, v, softmax_scale, causal, window_size, dropout_p, sharding, group,
                                            comm, layout, strategy, seqlen, backward_scheme, ulysses_degree, threads,
                                            scale, window, cu_seqlens)
    lengths = [len(p) for p in shard_plan(n, c.world_size, layout, mask)]
    size = q.element_size()
    result = _burst.strategy_bytes(settings, q.shape[0], q.shape[2], k.shape[2], q.shape[3], size, size, lengths,
                                   c.rank)
    return {"forward": result["forward"], "backward": result["backward"]}
