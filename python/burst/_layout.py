"""Moving tensors between global token order and the ranks' shards.

A layout says which global tokens each of P ranks holds (see include/burst/layout.h):
zigzag (chunks r and 2P-1-r of 2P, which balances causal work; the default everywhere, as in
the CLI), contiguous (rank r: [r N/P, (r+1) N/P)) and striped (tokens r, r+P, r+2P, ...).
Two more place tokens by the mask, so they take it (cu_seqlens, causal, window_size):
doc-zigzag (zigzag inside every packed document of at least 2P tokens, shorter documents
whole to the rank with the least work) and balanced (contiguous cuts of equal work).
Every helper works on the sequence dimension `dim` (1 in [b, s, h, d] and [b, s, ...]
tensors) and takes the world size before the rank. burst.Sharding bundles a communicator
with its layout and mask, so shards and the attention call cannot disagree on them.
"""

import collections
import operator

import torch

from . import _burst

# LAYOUTS: the layouts whose shards depend on the sequence length alone; MASK_LAYOUTS: those
# that place tokens by the mask too. The library's table lists both (burst/layout.h).
MASK_LAYOUTS = tuple(_burst.mask_layouts)
LAYOUTS = tuple(name for name in _burst.layouts if name not in MASK_LAYOUTS)
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
    """layout as one of LAYOUTS or MASK_LAYOUTS: TypeError when it is no str, ValueError naming
    the choices."""
    if not isinstance(layout, str):
        raise TypeError(f"{name}: expected a str, got {type(layout).__name__} {layout!r}")
    if layout not in LAYOUTS + MASK_LAYOUTS:
        raise ValueError(f"{name}: expected one of {', '.join(LAYOUTS + MASK_LAYOUTS)}, got '{layout}'")
    return layout


def flag(name, value):
    """value as a bool: TypeError unless it is True, False, 0 or 1."""
    if not (value is True or value is False or (is_integer(value) and operator.index(value) in (0, 1))):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _window_side(x):
    return is_integer(x) and -1 <= operator.index(x) <= MAX_WINDOW


def window_sides(window_size, window=None):
    """(left, right) from window_size=(left, right) or the older window= (an int w for
    (w, w), or a pair); -1 is an unbounded side."""
    if window_size is not None and window is not None:
        raise ValueError(f"window_size and window: expected one of them (window is the older name), got "
                         f"window_size={window_size!r} and window={window!r}")
    pair = f"a (left, right) pair of ints from -1 (unbounded) to {MAX_WINDOW}"
    if window is not None and is_integer(window):
        if not 0 <= operator.index(window) <= MAX_WINDOW:
            raise ValueError(f"window: expected None, an int from 0 to {MAX_WINDOW} or {pair}, got "
                             f"{operator.index(window)}")
        return operator.index(window), operator.index(window)
    name, value = ("window_size", window_size) if window is None else ("window", window)
    if value is None:
        return -1, -1
    try:
        sides = tuple(value)
    except TypeError:
        sides = ()
    if len(sides) != 2 or not all(_window_side(x) for x in sides):
        raise ValueError(f"{name}: expected {pair}, got {value!r}")
    return operator.index(sides[0]), operator.index(sides[1])


# The library's bound on a packed sequence (kernels' check of MaskSpec::documents).
MAX_DOCUMENT_TOKENS = 2**31


def cu_seqlens_argument(cu_seqlens, name="cu_seqlens"):
    """The offsets 0 = c_0 < c_1 < ... < c_D of D packed documents (flash-attn's cu_seqlens) as
    a tuple of ints, or None. Takes a CPU int32 or int64 tensor of D + 1 entries or a sequence
    of ints; ValueError naming the argument, the expected and the actual value for a wrong
    dtype, shape, device, first offset or order (TypeError for what is no tensor or
    sequence of ints). The last offset is checked against the sequence length where that is
    known (check_total)."""
    if cu_seqlens is None:
        return None
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.device.type != "cpu":
            raise ValueError(f"{name}: expected a CPU tensor, got device {cu_seqlens.device.type}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name}: expected dtype torch.int32 or torch.int64, got {cu_seqlens.dtype}")
        if cu_seqlens.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D tensor of D + 1 offsets, got shape {list(cu_seqlens.shape)}")
        offsets = tuple(cu_seqlens.tolist())
    elif isinstance(cu_seqlens, (str, bytes)) or not hasattr(cu_seqlens, "__len__"):
        raise TypeError(f"{name}: expected a 1-D int32 or int64 tensor or a sequence of ints, got "
                        f"{type(cu_seqlens).__name__} {cu_seqlens!r}")
    else:
        for i, x in enumerate(cu_seqlens):
            if not is_integer(x):
                raise TypeError(f"{name}: expected a sequence of ints, got {type(x).__name__} {x!r} at index {i}")
        offsets = tuple(operator.index(x) for x in cu_seqlens)
    if len(offsets) < 2:
        raise ValueError(f"{name}: expected at least 2 offsets (0 and the sequence length), got {len(offsets)}: "
                         f"{list(offsets)}")
    if offsets[0] != 0:
        raise ValueError(f"{name}: expected the first offset to be 0, got {offsets[0]}")
    for i in range(1, len(offsets)):
        if offsets[i] <= offsets[i - 1]:
            raise ValueError(f"{name}: expected increasing offsets (every document at least one token), got "
                             f"{offsets[i - 1]} then {offsets[i]} at index {i}")
    if offsets[-1] > MAX_DOCUMENT_TOKENS:
        raise ValueError(f"{name}: expected at most {MAX_DOCUMENT_TOKENS} tokens, got a last offset of {offsets[-1]}")
    return offsets


def check_total(documents, seqlen, what, name="cu_seqlens"):
    """ValueError unless the last offset of `documents` (cu_seqlens_argument's) is seqlen;
    `what` says where that length comes from."""
    if documents is not None and documents[-1] != seqlen:
        raise ValueError(f"{name}: expected the last offset to be the sequence length {seqlen} ({what}), got "
                         f"{documents[-1]}")


class Mask(collections.namedtuple("Mask", "causal window documents")):
    """What a mask-reading layout places tokens by: causal, the window (left, right) with -1
    unbounded, and the documents (a tuple of offsets, or None for one document)."""

    __slots__ = ()

    @staticmethod
    def of(cu_seqlens=None, causal=False, window_size=None):
        return Mask(flag("causal", causal), window_sides(window_size), cu_seqlens_argument(cu_seqlens))

    def arguments(self):
        """The mask as the bindings take it."""
        return dict(causal=self.causal, window_left=self.window[0], window_right=self.window[1],
                    documents=None if self.documents is None else list(self.documents))


def shard_plan(seqlen, world_size, layout, mask):
    """Every rank's global positions (lists, rank order) under layout and mask (a Mask)."""
    check_total(mask.documents, seqlen, "the length being sharded")
    return _burst.shard_plan(seqlen, world_size, layout, **mask.arguments())


def mask_positions(seqlen, world_size, rank, layout, mask):
    """positions for checked arguments and a Mask."""
    check_total(mask.documents, seqlen, "the length being sharded")
    return torch.tensor(_burst.positions(seqlen, world_size, rank, layout, **mask.arguments()), dtype=torch.int64)


def positions(seqlen, world_size, rank, layout=DEFAULT_LAYOUT, *, cu_seqlens=None, causal=False, window_size=None):
    """Returns the global positions of rank's tokens in its shard's order (an int64 tensor):
    the positions rotary embeddings need on that rank. cu_seqlens, causal and window_size:
    the mask of the attention calls, which doc-zigzag and balanced place tokens by (the
    other layouts ignore them); cu_seqlens must end at seqlen."""
    world_size, rank = _world(world_size, rank)
    seqlen = int_argument("seqlen", seqlen, world_size, MAX_SEQLEN,
                          f"at least one token per rank ({world_size}) and at most {MAX_SEQLEN}")
    check_layout(layout)
    return mask_positions(seqlen, world_size, rank, layout, Mask.of(cu_seqlens, causal, window_size))


def document_positions(positions, cu_seqlens):
    """Each global position's offset inside its packed document (int64, positions' shape):
    where rotary embeddings restart, as they do for documents trained one by one. Without
    documents, the positions themselves."""
    positions = torch.as_tensor(positions, dtype=torch.int64)
    documents = cu_seqlens_argument(cu_seqlens)
    if documents is None:
        return positions.clone()
    if positions.numel() and not (0 <= positions.min().item() and positions.max().item() < documents[-1]):
        raise ValueError(f"positions: expected positions in [0, {documents[-1]}) (the documents' tokens), got "
                         f"{positions.min().item()} to {positions.max().item()}")
    starts = torch.tensor(documents, dtype=torch.int64)
    return positions - starts[torch.searchsorted(starts, positions, right=True) - 1]


# Earlier builds' shard took (x, rank, world_size). Read in today's order such a call always
# names a rank outside the world (its rank was below its world size), so it fails with this
# hint instead of returning another rank's shard.
_SHARD_ORDER = "; burst.shard takes (x, world_size, rank), in the order of burst.positions"


def shard(x, world_size, rank, layout=DEFAULT_LAYOUT, dim=1, *, cu_seqlens=None, causal=False, window_size=None):
    """Returns rank's shard of the global tensor x: (b, N, ...) -> (b, n_rank, ...) along dim.
    cu_seqlens, causal, window_size: the mask, for doc-zigzag and balanced (positions)."""
    dim = sequence_dim(x, dim)
    try:
        world_size, rank = _world(world_size, rank)
    except ValueError as e:
        raise ValueError(f"{e}{_SHARD_ORDER}") from None
    if x.shape[dim] < world_size:
        raise ValueError(f"x: expected at least one token per rank ({world_size}) along dim {dim}, "
                         f"got shape {list(x.shape)}")
    return shard_with(x, world_size, rank, check_layout(layout), dim, Mask.of(cu_seqlens, causal, window_size))


def shard_with(x, world_size, rank, layout, dim, mask):
    """shard for checked arguments and a Mask."""
    n = x.shape[dim]
    check_total(mask.documents, n, f"x's length along dim {dim}")
    return x.index_select(dim, mask_positions(n, world_size, rank, layout, mask))


def unshard(shards, layout=DEFAULT_LAYOUT, dim=1, *, cu_seqlens=None, causal=False, window_size=None):
    """Reassembles the global tensor from every rank's shard, given in rank order:
    P x (b, n_r, ...) -> (b, N, ...). The inverse of shard (with the same mask arguments)."""
    if not shards:
        raise ValueError("shards: expected one tensor per rank, got none")
    for rank, s in enumerate(shards):
        d = sequence_dim(s, dim, f"shards[{rank}]")
        if s.shape[d] == 0:
            raise ValueError(f"shards: expected at least one token in every shard along dim {d}, "
                             f"got shape {list(s.shape)} for rank {rank}")
    return unshard_with(shards, check_layout(layout), dim, Mask.of(cu_seqlens, causal, window_size))


def unshard_with(shards, layout, dim, mask):
    """unshard for checked arguments and a Mask."""
    world_size = len(shards)
    seqlen = sum(s.shape[dim] for s in shards)
    check_total(mask.documents, seqlen, "the sum of the shards' lengths")
    shape = list(shards[0].shape)
    shape[dim] = seqlen
    out = shards[0].new_empty(shape)
    for rank, (s, pos) in enumerate(zip(shards, shard_plan(seqlen, world_size, layout, mask))):
        if s.shape[dim] != len(pos):
            raise ValueError(f"shards: rank {rank}'s shard has {s.shape[dim]} tokens but the {layout} "
                             f"layout of {seqlen} tokens over {world_size} ranks gives it {len(pos)}")
        out.index_copy_(dim, torch.tensor(pos, dtype=torch.int64), s)
    return out


def gather(x, comm=None, layout=DEFAULT_LAYOUT, dim=1, *, group=None, cu_seqlens=None, causal=False,
           window_size=None):
    """Returns the global tensor assembled from every rank's shard x, on every rank.
    Collective over the communicator of `group` or `comm` (a torch.distributed group, an
    mpi4py communicator or a burst.Communicator); with neither, x is the whole sequence
    already. cu_seqlens, causal, window_size: the mask, as for shard. Works for any dtype;
    not differentiable."""
    from ._comm import resolve  # deferred: _comm imports this module

    dim = sequence_dim(x, dim)
    check_layout(layout)
    mask = Mask.of(cu_seqlens, causal, window_size)
    return gather_with(x, resolve(group, comm), layout, dim, mask)


def gather_with(x, c, layout, dim, mask):
    """gather over the burst.Communicator c, for checked arguments and a Mask."""
    if c.world_size == 1:
        check_total(mask.documents, x.shape[dim], f"x's length along dim {dim}")
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
    return unshard_with([every[r, :n].movedim(0, dim) for r, n in enumerate(lengths)], layout, dim, mask)
