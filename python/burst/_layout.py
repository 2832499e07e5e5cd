"""Moving tensors between global token order and the ranks' shards.

A layout says which global tokens each of P ranks holds (see include/burst/layout.h):
zigzag (chunks r and 2P-1-r of 2P, which balances causal work; the default everywhere, as in
the CLI), contiguous (rank r: [r N/P, (r+1) N/P)) and striped (tokens r, r+P, r+2P, ...).
Every helper works on the sequence dimension `dim` (1 in [b, s, h, d] and [b, s, ...]
tensors) and takes the world size before the rank. burst.Sharding bundles a communicator
with its layout, so shards and the attention call cannot disagree on it.
"""

import operator

import torch

from . import _burst

LAYOUTS = ("contiguous", "zigzag", "striped")
DEFAULT_LAYOUT = "zigzag"

# Bounds of the integers the C++ core takes, checked here so that a value past a C++ type
# gives a ValueError naming the argument rather than pybind11's TypeError. Positions are
# int64 and the layouts multiply a length by up to 2 x world_size, so lengths stay far below
# 2**63 (2**32 tokens is also `burst run --seqlen`'s bound); a window up to 2**62 keeps
# position + window inside int64.
INT_MAX = 2**31 - 1
MAX_SEQLEN = 2**32
MAX_WINDOW = 2**62


def is_integer(value):
    """True for ints and integer scalars (numpy, torch) but not bools or floats."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        return False
    try:
        operator.index(value)
    except TypeError:  # a float tensor has __index__ but refuses it
        return False
    return True


def int_argument(name, value, low, high, expected=None):
    """value as an int in [low, high]. TypeError when it is no integer (1.5 is not truncated,
    True is no count); ValueError naming the argument, the range and the value otherwise."""
    if not is_integer(value):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if not low <= value <= high:
        raise ValueError(f"{name}: expected {expected or f'{low} to {high}'}, got {value}")
    return value


def real_argument(name, value):
    """value as a float: TypeError when it is no number, ValueError when it is an int too
    large for a float."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected a finite number, got {value}") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}") from None


def sequence_dim(x, dim, name="x"):
    """dim as an index into x's dimensions (negative ones count from the end)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected a tensor with a sequence dimension, got a 0-dimensional tensor")
    n = x.dim()
    return int_argument("dim", dim, -n, n - 1, f"-{n} to {n - 1} for {name} of shape {list(x.shape)}") % n


def _world(world_size, rank):
    world_size = int_argument("world_size", world_size, 1, INT_MAX, ">= 1")
    rank = int_argument("rank", rank, 0, world_size - 1, f"0 to {world_size - 1} (world_size {world_size})")
    return world_size, rank


def check_layout(layout, name="layout"):
    """layout as one of LAYOUTS: TypeError when it is no str, ValueError naming the choices."""
    if not isinstance(layout, str):
        raise TypeError(f"{name}: expected a str, got {type(layout).__name__} {layout!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"{name}: expected one of {', '.join(LAYOUTS)}, got '{layout}'")
    return layout


def positions(seqlen, world_size, rank, layout=DEFAULT_LAYOUT):
    """Returns the global positions of rank's tokens in its shard's order (an int64 tensor):
    the positions rotary embeddings need on that rank."""
    world_size, rank = _world(world_size, rank)
    seqlen = int_argument("seqlen", seqlen, world_size, MAX_SEQLEN,
                          f"at least one token per rank ({world_size}) and at most {MAX_SEQLEN}")
    check_layout(layout)
    return torch.tensor(_burst.positions(seqlen, world_size, rank, layout), dtype=torch.int64)


# Earlier builds' shard took (x, rank, world_size). Read in today's order such a call always
# names a rank outside the world (its rank was below its world size), so it fails with this
# hint instead of returning another rank's shard.
_SHARD_ORDER = "; burst.shard takes (x, world_size, rank), in the order of burst.positions"


def shard(x, world_size, rank, layout=DEFAULT_LAYOUT, dim=1):
    """Returns rank's shard of the global tensor x: (b, N, ...) -> (b, n_rank, ...) along dim."""
    dim = sequence_dim(x, dim)
    try:
        world_size, rank = _world(world_size, rank)
    except ValueError as e:
        raise ValueError(f"{e}{_SHARD_ORDER}") from None
    if x.shape[dim] < world_size:
        raise ValueError(f"x: expected at least one token per rank ({world_size}) along dim {dim}, "
                         f"got shape {list(x.shape)}")
    return x.index_select(dim, positions(x.shape[dim], world_size, rank, layout))


def unshard(shards, layout=DEFAULT_LAYOUT, dim=1):
    """Reassembles the global tensor from every rank's shard, given in rank order:
    P x (b, n_r, ...) -> (b, N, ...). The inverse of shard."""
    if not shards:
        raise ValueError("shards: expected one tensor per rank, got none")
    for rank, s in enumerate(shards):
        d = sequence_dim(s, dim, f"shards[{rank}]")
        if s.shape[d] == 0:
            raise ValueError(f"shards: expected at least one token in every shard along dim {d}, "
                             f"got shape {list(s.shape)} for rank {rank}")
    check_layout(layout)
    world_size = len(shards)
    seqlen = sum(s.shape[dim] for s in shards)
    shape = list(shards[0].shape)
    shape[dim] = seqlen
    out = shards[0].new_empty(shape)
    for rank, s in enumerate(shards):
        pos = positions(seqlen, world_size, rank, layout)
        if s.shape[dim] != len(pos):
            raise ValueError(f"shards: rank {rank}'s shard has {s.shape[dim]} tokens but the {layout} "
                             f"layout of {seqlen} tokens over {world_size} ranks gives it {len(pos)}")
        out.index_copy_(dim, pos, s)
    return out


def gather(x, comm=None, layout=DEFAULT_LAYOUT, dim=1, *, group=None):
    """Returns the global tensor assembled from every rank's shard x, on every rank.
    Collective over the communicator of `group` or `comm` (a torch.distributed group, an
    mpi4py communicator or a burst.Communicator); with neither, x is the whole sequence
    already. Works for any dtype; not differentiable."""
    from ._comm import resolve  # deferred: _comm imports this module

    dim = sequence_dim(x, dim)
    check_layout(layout)
    c = resolve(group, comm)
    if c.world_size == 1:
        return x.detach().clone()
    # (b, n_r, ...) -> (n_r, b, ...), padded to the longest shard, as bytes: one all-gather.
    rows = x.detach().movedim(dim, 0)
    lengths = c._impl.all_gather_int(rows.shape[0])
    longest = max(lengths)
    padded = rows.new_zeros((longest,) + tuple(rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    send = padded.reshape(-1).view(torch.uint8)
    recv = torch.empty(send.numel() * c.world_size, dtype=torch.uint8)
    c._impl.all_gather_bytes(send, recv)
    every = recv.view(x.dtype).reshape((c.world_size,) + tuple(padded.shape))
    return unshard([every[r, :n].movedim(0, dim) for r, n in enumerate(lengths)], layout, dim)
