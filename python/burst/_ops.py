"""burst.attention: exact distributed attention as a PyTorch autograd op."""

import atexit
import operator

import torch
from torch.autograd.function import once_differentiable

from . import _burst
from ._layout import INT_MAX, MAX_SEQLEN, MAX_WINDOW, int_argument, is_integer, real_argument


class Communicator:
    """The ranks an attention call spans: this process alone (comm None) or the processes of
    an mpi4py communicator. Creating one from mpi4py is collective: it duplicates the MPI
    communicator, so Burst's messages never meet the caller's. timeout: seconds every wait
    may take (default BURST_TIMEOUT, else 60); a rank that waits longer raises
    burst.CommTimeoutError."""

    def __init__(self, comm=None, timeout=None):
        self.mpi = comm
        self._impl = _burst.Communicator(comm)
        if timeout is not None:
            self.timeout = timeout

    @property
    def rank(self):
        return self._impl.rank

    @property
    def world_size(self):
        return self._impl.world_size

    @property
    def timeout(self):
        return self._impl.timeout

    @timeout.setter
    def timeout(self, seconds):
        self._impl.timeout = real_argument("timeout", seconds)  # the range is checked in C++


# One burst communicator per mpi4py communicator object passed as comm=, made on its first
# use (every rank passes its objects in the same order, so the collective creations pair
# up). Holding the mpi4py object keeps its id from being reused. Cleared at exit, before
# mpi4py finalises MPI.
_from_mpi4py = {}
_single = None
atexit.register(_from_mpi4py.clear)


def _communicator(comm):
    global _single
    if isinstance(comm, Communicator):
        return comm
    if comm is None:
        if _single is None:
            _single = Communicator()
        return _single
    cached = _from_mpi4py.get(id(comm))
    if cached is None or cached.mpi is not comm:
        cached = Communicator(comm)
        _from_mpi4py[id(comm)] = cached
    return cached


def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name}: expected 4 dimensions [b, s, h, d], got shape {list(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected every dimension of [b, s, h, d] to be at least 1, got shape {list(t.shape)}")


def _window_sides(window):
    """(left, right) of a window argument; -1 is an unbounded side."""
    if window is None:
        return -1, -1
    expected = (f"None, an int from 0 to {MAX_WINDOW} or a (left, right) pair of ints from -1 (unbounded) "
                f"to {MAX_WINDOW}")
    if is_integer(window):
        if not 0 <= operator.index(window) <= MAX_WINDOW:
            raise ValueError(f"window: expected {expected}, got {operator.index(window)}")
        return operator.index(window), operator.index(window)
    try:
        sides = tuple(window)
    except TypeError:
        sides = ()
    if len(sides) != 2 or not all(is_integer(x) and -1 <= operator.index(x) <= MAX_WINDOW for x in sides):
        raise ValueError(f"window: expected {expected}, got {window!r}")
    return operator.index(sides[0]), operator.index(sides[1])


def _string(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__} {value!r}")
    return value


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, settings, comm):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, s, h, _ = q.shape
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((b, h, s), dtype=torch.float32)
        _burst.forward(comm._impl, settings, q, k, v, out, lse)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings, ctx.comm = settings, comm
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.to(q.dtype).contiguous()
        dq = torch.empty(q.shape, dtype=torch.float32)
        dk = torch.empty(k.shape, dtype=torch.float32)
        dv = torch.empty(v.shape, dtype=torch.float32)
        _burst.backward(ctx.comm._impl, ctx.settings, q, k, v, out, lse, dout, dq, dk, dv)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def attention(q, k, v, causal=False, window=None, scale=None, strategy="burst", layout="contiguous",
              comm=None, seqlen=None, backward_scheme="auto", ulysses_degree=1, threads=1):
    """Returns softmax(scale q k^T, masked) v over the whole sequence, for this rank's queries.

    q [b, s_local, n_heads_q, d], k and v [b, s_local, n_heads_kv, d]: this rank's shards in
    the layout's local order (burst.shard makes them), float32 or bfloat16, on the CPU;
    n_heads_q a multiple of n_heads_kv (grouped-query attention). The result is shaped and
    typed like q; its backward runs the distributed backward and yields gradients in the
    inputs' dtypes. Arithmetic is fp32 throughout.

    causal: key position <= query position (global positions). window: None, an int w (keys
    within w positions of the query on either side) or (left, right), -1 being unbounded.
    scale: default 1/sqrt(d). strategy: burst, ring, allgather, ulysses, ring-rsa or usp
    (ulysses_degree ranks per Ulysses group). layout: contiguous, zigzag or striped.
    comm: None (one rank) or an mpi4py communicator (or a burst.Communicator). seqlen: the
    global length (default: the sum of the ranks' shard lengths, one small collective).
    backward_scheme (burst only): auto, q (BurstAttention's) or kv (RingAttention's).
    threads: kernel threads of this rank. Every rank of comm must make the same calls.
    Arguments are checked before any communication: a bad one raises ValueError naming it,
    the expected and the actual value (TypeError for a wrong type, e.g. a float count).
    """
    # Every argument is checked before the first collective, so a bad one fails alike on
    # every rank instead of leaving the others waiting.
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        _check_tensor(t, name)
    if not (causal is True or causal is False or causal in (0, 1)):
        raise TypeError(f"causal: expected True or False, got {causal!r}")
    left, right = _window_sides(window)
    if scale is not None:
        scale = real_argument("scale", scale)  # finiteness is checked in C++
    threads = int_argument("threads", threads, 1, _burst.max_threads)
    ulysses_degree = int_argument("ulysses_degree", ulysses_degree, 1, INT_MAX)
    if seqlen is not None:
        seqlen = int_argument("seqlen", seqlen, 1, MAX_SEQLEN)
    for name, value in (("strategy", strategy), ("layout", layout), ("backward_scheme", backward_scheme)):
        _string(name, value)
    c = _communicator(comm)
    if seqlen is None:
        seqlen = c._impl.total_length(q.shape[1])
    settings = _burst.make_settings(strategy=strategy, layout=layout, seqlen=seqlen, causal=bool(causal),
                                    window_left=left, window_right=right, scale=scale,
                                    backward_scheme=backward_scheme, ulysses_degree=ulysses_degree,
                                    threads=threads)
    return _Attention.apply(q, k, v, settings, c)
