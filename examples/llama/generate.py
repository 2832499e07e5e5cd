"""Greedy generation with the LLaMA-style model (model.py) over a KV cache sharded across the
ranks (burst.KvCache, one per layer): the prompt but its last token is prefilled on sequence
shards with BurstAttention's forward (rotary embeddings at the shards' global positions, K/V
left in the caches), then every step feeds one token, at its global position, to every rank;
its attention visits each rank's cache shard and the partial results merge in one small
all-reduce, bitwise alike on every rank, so every rank computes the same logits and picks the
same token without further communication.

    python3 python/tests/torchrun.py --nproc_per_node 4 examples/llama/generate.py   # 4 ranks, gloo
    python3 examples/llama/generate.py                                             # one process

compares the generated tokens with single-process generation with plain torch attention."""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, TinyLlama, torch_causal_attention  # noqa: E402

import burst  # noqa: E402


def _per_layer(caches, call):
    """attend(q, k, v) for model.forward, which calls it once per layer in order: layer i's
    call goes to caches[i]."""
    layers = iter(caches)
    return lambda q, k, v: call(next(layers), q, k, v)


@torch.no_grad()
def generate(model, prompt, steps, *, group=None, layout="zigzag", strategy="burst", threads=1):
    """Greedy decoding of `steps` tokens after prompt [b, N] (the whole prompt, on every rank)
    over the ranks of `group` (a torch.distributed gloo group, an mpi4py communicator, or
    None: this process alone). Returns (tokens [b, steps], logits [b, steps, vocab], the
    layers' caches); tokens and logits are the same on every rank."""
    cfg = model.cfg
    b, n = prompt.shape
    sharding = burst.Sharding(group, layout)
    caches = [burst.KvCache(b, cfg.n_kv_heads, cfg.head_dim, torch.float32, sharding=sharding, strategy=strategy,
                            threads=threads, capacity=(n + steps) // sharding.world_size + 2)
              for _ in model.blocks]
    context = n - 1  # the last prompt token is the first decode step, so every rank has its logits
    if context >= 1:
        if strategy == "tp":  # a head-sharded cache holds every token: a chunk prefilled by extend
            model(prompt[:, :context], torch.arange(context), _per_layer(caches, lambda c, q, k, v: c.extend(q, k, v)))
        else:
            model(sharding.shard(prompt[:, :context]), sharding.positions(context),
                  _per_layer(caches, lambda c, q, k, v: c.prefill(q, k, v, seqlen=context)))
    token = prompt[:, context:]
    tokens, logits = [], []
    for step in range(steps):
        position = torch.tensor([context + step])
        row = model(token, position, _per_layer(caches, lambda c, q, k, v: c.extend(q, k, v)))[:, -1]
        token = row.argmax(-1, keepdim=True)
        tokens.append(token)
        logits.append(row)
    return torch.cat(tokens, 1), torch.stack(logits, 1), caches


def torch_cached_attention(cache, q, k, v):
    """Plain torch causal attention of new tokens over a torch KV cache (a list [K, V] grown
    here): q [b, s, hq, d] and k, v [b, s, hkv, d] of the s newest tokens."""
    if cache:
        k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)
    cache[:] = [k, v]
    group = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    s, n = q.shape[1], k.shape[1]
    mask = torch.arange(n)[None, :] > torch.arange(n - s, n)[:, None]  # key after query
    return torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(mask, float("-inf")).softmax(dim=-1), v)


@torch.no_grad()
def generate_torch(model, prompt, steps, recompute=False):
    """The reference: single-process greedy decoding with plain torch attention, over a torch KV
    cache (recompute=True: over the whole sequence every step, without a cache). Returns
    (tokens [b, steps], logits [b, steps, vocab])."""
    caches = [[] for _ in model.blocks]
    seq, start = prompt, 0
    tokens, logits = [], []
    for _ in range(steps):
        if recompute:
            row = model(seq, torch.arange(seq.shape[1]), torch_causal_attention)[:, -1]
        else:
            row = model(seq[:, start:], torch.arange(start, seq.shape[1]),
                        _per_layer(caches, torch_cached_attention))[:, -1]
            start = seq.shape[1]
        token = row.argmax(-1, keepdim=True)
        seq = torch.cat([seq, token], 1)
        tokens.append(token)
        logits.append(row)
    return torch.cat(tokens, 1), torch.stack(logits, 1)


def demo_model(cfg=None, seed=0, logit_scale=30.0, attention_scale=(4.0, 10.0)):
    """A randomly initialised model made to depend on its context: query and key weights scaled
    by attention_scale[0] (sharper attention), value and output ones by attention_scale[1]
    (attention's share of the residual stream; changing one prompt token then changes most of
    the generated ones), head weights by logit_scale (greedy choices not decided by fp32
    rounding)."""
    torch.manual_seed(seed)
    model = TinyLlama(cfg or Config()).eval()
    with torch.no_grad():
        model.head.weight.mul_(logit_scale)
        for block in model.blocks:
            a = block.attention
            for w, scale in ((a.wq, attention_scale[0]), (a.wk, attention_scale[0]), (a.wv, attention_scale[1]),
                             (a.wo, attention_scale[1])):
                w.weight.mul_(scale)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens (random bytes)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--layout", default="zigzag", choices=burst.LAYOUTS)
    parser.add_argument("--strategy", default="burst", choices=burst.DECODE_STRATEGIES)
    args = parser.parse_args()
    group = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun
        import torch.distributed as dist

        dist.init_process_group("gloo")
        group = dist.group.WORLD
    model = demo_model(seed=1)
    prompt = torch.randint(0, model.cfg.vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    tokens, _, caches = generate(model, prompt, args.tokens, group=group, layout=args.layout,
                                 strategy=args.strategy)
    reference, _ = generate_torch(model, prompt, args.tokens)
    same = torch.equal(tokens, reference)
    rank = caches[0].communicator.rank
    print(f"rank {rank}: {caches[0]}; tokens {'equal to' if same else 'DIFFER from'} single-process torch "
          f"generation: {tokens[0, :16].tolist()} ...", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
