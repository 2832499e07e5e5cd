# Causal attention over the ranks of a torch.distributed group: each rank holds its zigzag
# shard of q, k, v; forward, lse and backward are checked against one process's float64
# attention of the whole sequence. Run with torchrun (no MPI needed):
#   python3 -m torch.distributed.run --nproc_per_node 4 --redirects 2 --tee 2 sequence_parallel.py
import torch
import torch.distributed as dist

import burst

dist.init_process_group("gloo")
sharding = burst.Sharding(dist.group.WORLD)  # zigzag layout, Burst's default

# The same global inputs on every rank (seeded), [b, N, heads, d]; this rank keeps its shard.
b, n, heads, kv_heads, d = 1, 1024, 8, 2, 64
gen = torch.Generator().manual_seed(0)
q, k, v, dout = (torch.randn(b, n, h, d, generator=gen) for h in (heads, kv_heads, kv_heads, heads))
q_r, k_r, v_r = (sharding.shard(t).requires_grad_() for t in (q, k, v))

out, lse = burst.attention(q_r, k_r, v_r, causal=True, sharding=sharding, return_lse=True)
out.backward(sharding.shard(dout))

# The whole sequence on one process, in float64.
q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
scores = torch.einsum("bqhd,bkhd->bhqk", q64, k64.repeat_interleave(heads // kv_heads, 2)) / d**0.5
scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
want = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v64.repeat_interleave(heads // kv_heads, 2))
want.backward(dout.double())

def error(got, ref):  # largest |difference| relative to the largest |ref|
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()

errors = {"out": error(sharding.gather(out), want), "lse": error(sharding.gather(lse, dim=2), scores.logsumexp(-1)),
          "dq": error(sharding.gather(q_r.grad), q64.grad), "dk": error(sharding.gather(k_r.grad), k64.grad),
          "dv": error(sharding.gather(v_r.grad), v64.grad)}
sent = sharding.communicator.last_stats
print(f"rank {sharding.rank} of {sharding.world_size}: {q_r.shape[1]} tokens, sent {sent['forward']['bytes_sent']} "
      f"bytes forward, {sent['backward']['bytes_sent']} backward; largest error "
      f"{max(errors.values()):.1e} ({max(errors, key=errors.get)})")
assert max(errors.values()) < 1e-4
