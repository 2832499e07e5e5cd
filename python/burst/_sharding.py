"""burst.Sharding: a communicator, a layout and the mask the layout places tokens by, held
together, so the tensors it shards, the positions it gives and the attention calls it is
passed to all use one layout."""

import copy

import torch

from . import _comm
from ._layout import DEFAULT_LAYOUT, MASK_LAYOUTS, MAX_SEQLEN, Mask, check_layout, cu_seqlens_argument, \
    document_positions, gather_with, int_argument, mask_positions, sequence_dim, shard_with


class Sharding:
    """How a sequence is spread over the ranks of `group`: this rank holds the tokens that
    `layout` gives it ("zigzag" by default, as everywhere in Burst; "contiguous", "striped",
    and the two that place tokens by the mask, "doc-zigzag" and "balanced").

        sharding = burst.Sharding(dist.group.WORLD)        # or an mpi4py communicator, or None
        x_local = sharding.shard(x)                        # [b, N, ...] -> [b, n_local, ...]
        pos = sharding.positions(x.shape[1])               # global positions (rotary embeddings)
        out = burst.attention(q, k, v, causal=True, sharding=sharding)
        y = sharding.gather(out)                           # [b, N, ...] on every rank

    group: a torch.distributed ProcessGroup, an mpi4py communicator, a burst.Communicator or
    None (this process alone). The first Sharding (or call) over a group or mpi4py
    communicator is collective over it. Passing the sharding to burst.attention (or
    burst.nn.BurstAttention) is what ties the shards to their layout: a layout= that
    disagrees with it is refused.

    Packed documents: cu_seqlens (D + 1 global offsets, 0 first, the sequence length last; an
    int32/int64 tensor or a sequence of ints) are the documents of the sequences this
    sharding shards, and the attention calls it is passed to mask by them (the same for every
    batch row). doc-zigzag and balanced also place tokens by causal and window_size, which
    the calls must then repeat; with_documents(cu_seqlens) gives the sharding of another
    packed batch."""

    def __init__(self, group=None, layout=DEFAULT_LAYOUT, *, cu_seqlens=None, causal=False, window_size=None):
        self.layout = check_layout(layout)
        self._mask = Mask.of(cu_seqlens, causal, window_size)
        self.communicator = _comm.communicator(group, "group")

    @property
    def world_size(self):
        return self.communicator.world_size

    @property
    def rank(self):
        return self.communicator.rank

    @property
    def cu_seqlens(self):
        """The documents' offsets (an int64 tensor), or None for one document."""
        documents = self._mask.documents
        return None if documents is None else torch.tensor(documents, dtype=torch.int64)

    @property
    def causal(self):
        return self._mask.causal

    @property
    def window_size(self):
        return self._mask.window

    def with_documents(self, cu_seqlens):
        """This sharding (communicator, layout, causal, window) for a batch packed as cu_seqlens
        (None: one document). Cheap: no communication."""
        other = copy.copy(self)
        other._mask = self._mask._replace(documents=cu_seqlens_argument(cu_seqlens))
        return other

    def _seqlen(self, seqlen):
        if seqlen is None:
            if self._mask.documents is None:
                raise ValueError("seqlen: expected the sequence length (this sharding holds no cu_seqlens to take "
                                 "it from), got None")
            return self._mask.documents[-1]
        return int_argument("seqlen", seqlen, self.world_size, MAX_SEQLEN,
                            f"at least one token per rank ({self.world_size}) and at most {MAX_SEQLEN}")

    def positions(self, seqlen=None):
        """Global positions of this rank's tokens of a sequence of seqlen tokens (int64);
        seqlen defaults to the documents' end."""
        return mask_positions(self._seqlen(seqlen), self.world_size, self.rank, self.layout, self._mask)

    def document_positions(self, seqlen=None):
        """Positions of this rank's tokens inside their documents (int64): where rotary
        embeddings of packed documents restart at 0. Without documents, positions()."""
        return document_positions(self.positions(seqlen), self._mask.documents)

    def local_length(self, seqlen=None):
        """Tokens this rank holds of a sequence of seqlen tokens."""
        return len(self.positions(seqlen))

    def seqlen(self, local_length):
        """The global length of shards of `local_length` tokens on this rank: the sum over the
        ranks. Collective (one small all-gather)."""
        local_length = int_argument("local_length", local_length, 1, MAX_SEQLEN)
        return sum(self.communicator._impl.all_gather_int(local_length))

    def shard(self, x, dim=1):
        """This rank's shard of the global tensor x: (b, N, ...) -> (b, n_local, ...) along dim."""
        dim = sequence_dim(x, dim)
        if x.shape[dim] < self.world_size:
            raise ValueError(f"x: expected at least one token per rank ({self.world_size}) along dim {dim}, "
                             f"got shape {list(x.shape)}")
        return shard_with(x, self.world_size, self.rank, self.layout, dim, self._mask)

    def gather(self, x, dim=1):
        """The global tensor from every rank's shard x, on every rank. Collective."""
        dim = sequence_dim(x, dim)
        return gather_with(x, self.communicator, self.layout, dim, self._mask)

    def _call_documents(self, causal, window, documents):
        """The documents of an attention call on this sharding's shards, whose own mask is
        causal, window (left, right) and documents (cu_seqlens_argument's, or None: the
        sharding's). ValueError when the call's documents differ from the sharding's, or when
        the layout placed the tokens by another mask than the call's."""
        held = self._mask
        if documents is None:
            documents = held.documents
        elif held.documents is not None and documents != held.documents:
            raise ValueError(f"cu_seqlens: {_short(documents)} disagrees with the sharding's cu_seqlens "
                             f"{_short(held.documents)}; pass the sharding alone, or one made with "
                             f"sharding.with_documents(cu_seqlens) for another batch")
        if self.layout in MASK_LAYOUTS:
            why = f"the sharding's {self.layout} layout placed the tokens by its mask"
            if documents != held.documents:
                raise ValueError(f"cu_seqlens: {_short(documents)}, but {why}, made without documents; shard the "
                                 f"inputs with sharding.with_documents(cu_seqlens) and pass that sharding")
            if causal != held.causal:
                raise ValueError(f"causal: {causal}, but {why}, made with causal={held.causal}; make the sharding "
                                 f"with causal={causal}")
            if tuple(window) != held.window:
                raise ValueError(f"window_size: {tuple(window)}, but {why}, made with window_size={held.window}; "
                                 f"make the sharding with window_size={tuple(window)}")
        return documents

    def __repr__(self):
        documents = "" if self._mask.documents is None else f", {len(self._mask.documents) - 1} documents"
        return (f"burst.Sharding(rank {self.rank} of {self.world_size}, layout {self.layout}{documents}, "
                f"{self.communicator.backend})")


def _short(documents):
    """Offsets for a message: all of a few, the ends of many."""
    if documents is None:
        return "None"
    if len(documents) <= 8:
        return str(list(documents))
    return f"[{', '.join(map(str, documents[:4]))}, ..., {documents[-1]}] ({len(documents) - 1} documents)"
