"""burst.Sharding: a communicator and a layout held together, so the tensors it shards, the
positions it gives and the attention calls it is passed to all use one layout."""

from . import _comm
from ._layout import DEFAULT_LAYOUT, MAX_SEQLEN, check_layout, gather, int_argument, positions, sequence_dim, shard


class Sharding:
    """How a sequence is spread over the ranks of `group`: this rank holds the tokens that
    `layout` gives it ("zigzag" by default, as everywhere in Burst; "contiguous", "striped").

        sharding = burst.Sharding(dist.group.WORLD)        # or an mpi4py communicator, or None
        x_local = sharding.shard(x)                        # [b, N, ...] -> [b, n_local, ...]
        pos = sharding.positions(x.shape[1])               # global positions (rotary embeddings)
        out = burst.attention(q, k, v, causal=True, sharding=sharding)
        y = sharding.gather(out)                           # [b, N, ...] on every rank

    group: a torch.distributed ProcessGroup, an mpi4py communicator, a burst.Communicator or
    None (this process alone). The first Sharding (or call) over a group or mpi4py
    communicator is collective over it. Passing the sharding to burst.attention (or
    burst.nn.BurstAttention) is what ties the shards to their layout: a layout= that
    disagrees with it is refused."""

    def __init__(self, group=None, layout=DEFAULT_LAYOUT):
        self.layout = check_layout(layout)
        self.communicator = _comm.communicator(group, "group")

    @property
    def world_size(self):
        return self.communicator.world_size

    @property
    def rank(self):
        return self.communicator.rank

    def positions(self, seqlen):
        """Global positions of this rank's tokens of a sequence of seqlen tokens (int64)."""
        return positions(seqlen, self.world_size, self.rank, self.layout)

    def local_length(self, seqlen):
        """Tokens this rank holds of a sequence of seqlen tokens."""
        return len(self.positions(seqlen))

    def seqlen(self, local_length):
        """The global length of shards of `local_length` tokens on this rank: the sum over the
        ranks. Collective (one small all-gather)."""
        local_length = int_argument("local_length", local_length, 1, MAX_SEQLEN)
        return sum(self.communicator._impl.all_gather_int(local_length))

    def shard(self, x, dim=1):
        """This rank's shard of the global tensor x: (b, N, ...) -> (b, n_local, ...) along dim."""
        return shard(x, self.world_size, self.rank, self.layout, dim)

    def gather(self, x, dim=1):
        """The global tensor from every rank's shard x, on every rank. Collective."""
        sequence_dim(x, dim)
        return gather(x, self.communicator, self.layout, dim)

    def __repr__(self):
        return (f"burst.Sharding(rank {self.rank} of {self.world_size}, layout {self.layout}, "
                f"{self.communicator.backend})")

