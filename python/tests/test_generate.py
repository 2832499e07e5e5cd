"""Greedy generation with burst.KvCache (examples/llama/generate.py): 64 tokens after a prompt of
768 tokens on this job's ranks give exactly the tokens of single-process generation with plain
torch attention, every rank computes bitwise the same logits, and the layers' caches hold
balanced shards of every token. One process (plain pytest) or under torchrun over gloo:
    PYTHONPATH=build/python python3 python/tests/torchrun.py --nproc_per_node 4 \\
        -m pytest python/tests/test_generate.py"""

import os
import sys

import pytest
import torch
import torch.distributed as dist

import burst

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "llama"))
from generate import demo_model, generate, generate_torch  # noqa: E402

if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun
    dist.init_process_group("gloo")
    GROUP, P, RANK = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
else:
    GROUP, P, RANK = None, 1, 0

PROMPT, STEPS, BATCH = 768, 64, 2
# Burst's logits differ from torch's by fp32 rounding only (~3e-6 observed); the greedy
# choices are decided by margins far larger (checked below), so the tokens must be equal.
LOGIT_TOLERANCE = 1e-4

MODEL = demo_model(seed=1)
PROMPT_TOKENS = torch.randint(0, MODEL.cfg.vocab, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference():
    """Every rank computes the single-process torch generation itself."""
    tokens, logits = generate_torch(MODEL, PROMPT_TOKENS, STEPS)
    top = logits.topk(2, dim=-1).values
    assert (top[..., 0] - top[..., 1]).min() > 100 * LOGIT_TOLERANCE, "the reference's greedy choices are near ties"
    # The tokens depend on the context: one prompt token changed far back changes them, so a
    # wrong position, mask or lost cache row cannot pass unseen.
    changed = PROMPT_TOKENS.clone()
    changed[:, 100] = (changed[:, 100] + 1) % MODEL.cfg.vocab
    assert not torch.equal(generate_torch(MODEL, changed, STEPS)[0], tokens)
    return tokens, logits


def _same_on_every_rank(t):
    """True when t is bitwise the same on every rank."""
    if P == 1:
        return True
    every = [torch.empty_like(t) for _ in range(P)]
    dist.all_gather(every, t.contiguous(), group=GROUP)
    return all(torch.equal(e.view(torch.int32), t.view(torch.int32)) for e in every)


@pytest.mark.parametrize("strategy,layout", [("burst", "zigzag"), ("burst", "contiguous"), ("burst", "striped"),
                                             ("tp", "zigzag")])
def test_greedy_generation_matches_torch(reference, strategy, layout):
    if strategy == "tp" and MODEL.cfg.n_kv_heads % P != 0:
        pytest.skip(f"tp splits the {MODEL.cfg.n_kv_heads} kv heads over the ranks")
    ref_tokens, ref_logits = reference
    tokens, logits, caches = generate(MODEL, PROMPT_TOKENS, STEPS, group=GROUP, layout=layout, strategy=strategy)
    assert tokens.shape == (BATCH, STEPS)
    assert _same_on_every_rank(logits), "ranks computed different logits"
    assert (logits - ref_logits).abs().max().item() < LOGIT_TOLERANCE
    mismatch = (tokens != ref_tokens).nonzero()
    assert mismatch.numel() == 0, f"rank {RANK}: first token differing from torch's at {mismatch[0].tolist()}"
    total = PROMPT - 1 + STEPS
    for cache in caches:
        assert cache.size == total
        if strategy == "burst":  # token-sharded: about 1/P of the cache each
            assert sum(cache.tokens_per_rank) == total and cache.tokens_per_rank[RANK] == cache.local_size
            assert max(cache.tokens_per_rank) - min(cache.tokens_per_rank) <= 2
            assert cache.bytes == 2 * BATCH * cache.local_size * MODEL.cfg.n_kv_heads * MODEL.cfg.head_dim * 4
            assert sorted(cache.local_positions.tolist()) == cache.local_positions.tolist()
        stats = cache.last_stats["extend"]
        assert (stats["bytes_sent"] > 0) == (P > 1)


def test_cache_arguments():
    with pytest.raises(ValueError, match="dtype"):
        burst.KvCache(1, 2, 16, torch.float16, group=GROUP)
    with pytest.raises(ValueError, match="strategy"):
        burst.KvCache(1, 2, 16, strategy="nope", group=GROUP)
    with pytest.raises(ValueError, match="window_left"):
        burst.KvCache(1, 2, 16, window_left=-3, group=GROUP)
    cache = burst.KvCache(1, 2, 16, group=GROUP)
    q, kv = torch.zeros(1, 1, 4, 16), torch.zeros(1, 1, 2, 16)
    with pytest.raises(ValueError, match="^k: expected shape"):
        cache.extend(q, kv[:, :, :1], kv)
    with pytest.raises(ValueError, match="^q: expected the cache's dtype"):
        cache.extend(q.bfloat16(), kv, kv)
    with pytest.raises(ValueError, match="layout"):
        cache.prefill(q, kv, kv, layout="diagonal")
    assert cache.size == 0  # nothing reached the library
