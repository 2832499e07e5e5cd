"""Moving tensors between global token order and the ranks' shards.

A layout says which global tokens each of P ranks holds (see src/algo/layout.h):
contiguous (rank r: [r N/P, (r+1) N/P)), zigzag (chunks r and 2P-1-r of 2P, which
balances causal work) and striped (tokens r, r+P, r+2P, ...). Every helper works on the
sequence dimension `dim` (1 in [b, s, h, d] and [b, s, ...] tensors).
"""

import torch

from . import _burst

LAYOUTS = ("contiguous", "zigzag", "striped")


def positions(seqlen, world_size, rank, layout="contiguous"):
    """Returns the global positions of rank's tokens in its shard's order (an int64 tensor):
    the positions rotary embeddings need on that rank."""
    return torch.tensor(_burst.positions(seqlen, world_size, rank, layout), dtype=torch.int64)


def shard(x, rank, world_size, layout="contiguous", dim=1):
    """Returns rank's shard of the global tensor x: (b, N, ...) -> (b, n_rank, ...) along dim."""
    return x.index_select(dim, positions(x.shape[dim], world_size, rank, layout))


def unshard(shards, layout="contiguous", dim=1):
    """Reassembles the global tensor from every rank's shard, given in rank order:
    P x (b, n_r, ...) -> (b, N, ...). The inverse of shard."""
    if not shards:
        raise ValueError("shards: expected one tensor per rank, got none")
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


def gather(x, comm=None, layout="contiguous", dim=1):
    """Returns the global tensor assembled from every rank's shard x, on every rank.
    Collective over comm (an mpi4py communicator or a burst.Communicator made from one);
    with comm None, x is the whole sequence already. Works for any dtype; not differentiable."""
    from ._ops import Communicator  # deferred: _ops imports this module

    mpi = comm.mpi if isinstance(comm, Communicator) else comm
    if mpi is None:
        return x.detach().clone()
    return unshard(mpi.allgather(x.detach()), layout, dim)
