"""Burst: exact distributed attention on CPUs (BurstAttention), as a PyTorch autograd op.

    import burst, torch.distributed as dist
    dist.init_process_group("gloo")                    # under torchrun
    sharding = burst.Sharding(dist.group.WORLD)        # zigzag layout by default
    q, k, v = (sharding.shard(t) for t in (q_all, k_all, v_all))
    out = burst.attention(q, k, v, causal=True, sharding=sharding)

Each rank passes its own [b, s_local, h, d] shards; a burst.Sharding ties a communicator (a
torch.distributed group, an mpi4py communicator, or None for one process) to a layout and
shards, gathers and gives the global positions of tokens (for rotary embeddings). Packed
documents (flash-attn's cu_seqlens) go to burst.attention(cu_seqlens=...) or the Sharding.
burst.nn.BurstAttention and burst.nn.AttentionLayer are the nn.Module forms; burst.KvCache
holds a KV cache sharded over the ranks for prefill and token-by-token decoding. Bad arguments
raise ValueError (TypeError for a wrong type); communication failures raise burst.CommError,
a RuntimeError (burst.CommTimeoutError when a wait passes its deadline).
"""

from . import nn
from ._burst import CommError, CommTimeoutError, __version__, mpi4py_support
from ._comm import Communicator
from ._decode import DECODE_STRATEGIES, KvCache
from ._layout import DEFAULT_LAYOUT, LAYOUTS, MASK_LAYOUTS, document_positions, gather, positions, shard, unshard
from ._ops import STRATEGIES, attention, expected_bytes
from ._plan import plan, plan_clusters, plan_models
from ._sharding import Sharding
from ._varlen import varlen_attention

flash_attn_varlen_func = varlen_attention  # flash-attn's name, for ported calls

__all__ = ["attention", "varlen_attention", "flash_attn_varlen_func", "expected_bytes", "Sharding", "Communicator",
           "nn", "shard", "unshard", "gather", "positions", "document_positions", "CommError", "CommTimeoutError", "LAYOUTS", "MASK_LAYOUTS",
           "DEFAULT_LAYOUT", "STRATEGIES", "mpi4py_support",
           "__version__", "plan", "plan_clusters", "plan_models", "KvCache", "DECODE_STRATEGIES"]
