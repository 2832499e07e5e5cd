"""Burst: exact distributed attention on CPUs (BurstAttention), as a PyTorch autograd op.

    import burst
    out = burst.attention(q, k, v, causal=True, comm=MPI.COMM_WORLD, layout="zigzag")

Each rank passes its own [b, s_local, h, d] shards; burst.shard / burst.gather move tensors
between global token order and shards, burst.positions gives a shard's global positions
(for rotary embeddings). Bad arguments raise ValueError (TypeError for a wrong type);
communication failures raise burst.CommError, a RuntimeError (burst.CommTimeoutError when
a wait passes its deadline).
"""

from ._burst import CommError, CommTimeoutError, mpi4py_support
from ._layout import LAYOUTS, gather, positions, shard, unshard
from ._ops import Communicator, attention

__all__ = ["attention", "Communicator", "shard", "unshard", "gather", "positions", "CommError",
           "CommTimeoutError", "LAYOUTS", "mpi4py_support"]
