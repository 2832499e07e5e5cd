"""Packed documents (cu_seqlens) through the Python module, on whatever ranks the test runs
on: one process (plain pytest), torchrun (gloo) or mpirun (mpi4py). Against torch's float64
attention with a block-diagonal mask built from cu_seqlens (and causal / windowed): documents
of one token, documents shorter than the ranks, one spanning every rank, many tiny ones;
outputs, lse and the gradients of q, k and v; fp32 and bf16; GQA; every strategy and layout,
doc-zigzag and balanced included; the layout helpers, the modules and the errors. Every rank
runs the same tests in the same order, so their collectives pair up.
Run: PYTHONPATH=build/python python3 -m pytest python/tests/test_documents.py
     PYTHONPATH=build/python python3 python/tests/torchrun.py --nproc_per_node 4 \\
         -m pytest python/tests/test_documents.py
     PYTHONPATH=build/python scripts/mpirun.sh -np 4 python3 -m pytest python/tests/test_documents.py"""

import os
import random

import attention_reference as ref
import pytest
import torch
from cases import check_case, random_inputs
from test_single import _layer_reference, layer_tolerance

import burst


def _world():
    """The ranks this run spans: a torch.distributed group under torchrun, MPI.COMM_WORLD
    under mpirun, else None (this process alone)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        return dist.group.WORLD
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        return MPI.COMM_WORLD
    return None


WORLD = _world()
SHARDING = burst.Sharding(WORLD)
P, RANK = SHARDING.world_size, SHARDING.rank
ALL_LAYOUTS = burst.LAYOUTS + burst.MASK_LAYOUTS


def offsets(lengths):
    """cu_seqlens of documents of these lengths laid back to back."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def _tiny_lengths(total, seed):
    rng = random.Random(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(min(rng.randint(1, 4), total - sum(lengths)))
    return lengths


# Document lengths of each pattern, for P ranks: the corner cases of issue 16.
PATTERNS = {
    "length-1": [1] * (2 * P + 3),
    "shorter-than-ranks": [1, 2, 3] * (P + 1),
    "spanning": [2, 6 * P + 3, 1, 4],  # the long one spans every rank in every layout
    "one-document": [5 * P + 2],
    "many-tiny": _tiny_lengths(8 * P + 5, seed=16),
}
MIXED = [1, 3, 4 * P + 5, 2, P + 1, 1]


def _options(strategy):
    # USP: Ulysses groups of 2 ranks where the world is even, the ring across them.
    return {"ulysses_degree": 2 if P % 2 == 0 else 1} if strategy == "usp" else {}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_every_layout(pattern, layout, causal):
    cu = offsets(PATTERNS[pattern])
    check_case(WORLD, layout=layout, causal=causal, n=cu[-1], cu_seqlens=cu, seed=len(cu))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["zigzag", "doc-zigzag", "balanced"])
@pytest.mark.parametrize("strategy", [s for s in burst.STRATEGIES if s != "ring-rsa"])
def test_every_strategy(strategy, layout, causal):
    """GQA (8 query heads on 4 kv heads, which Ulysses splits over up to 4 ranks)."""
    if strategy == "local" and P > 1:
        pytest.skip("local runs on one rank")
    cu = offsets(MIXED)
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, hq=8, hkv=4, n=cu[-1], cu_seqlens=cu,
               **_options(strategy))


@pytest.mark.parametrize("layout", ["contiguous", "doc-zigzag", "balanced"])
@pytest.mark.parametrize("window,causal", [((3, 2), False), ((5, 0), True)])
@pytest.mark.parametrize("strategy", ["burst", "ring", "allgather"])
def test_windows(strategy, window, causal, layout):
    cu = offsets([4, 1, 3 * P + 4, 7, 2])
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, window=window, n=cu[-1], cu_seqlens=cu)


@pytest.mark.parametrize("strategy", ["burst", "ulysses"])
def test_bf16(strategy):
    cu = offsets(MIXED)
    check_case(WORLD, strategy=strategy, layout="doc-zigzag", causal=True, hq=8, hkv=4, dtype=torch.bfloat16,
               n=cu[-1], cu_seqlens=cu)


@pytest.mark.parametrize("scheme", ["q", "kv"])
def test_backward_schemes(scheme):
    cu = offsets(MIXED)
    check_case(WORLD, layout="balanced", causal=True, backward_scheme=scheme, n=cu[-1], cu_seqlens=cu)


def test_ring_rsa_refuses_documents_but_runs_one():
    cu = offsets(MIXED)
    q, k, v, _ = random_inputs(1, cu[-1], 2, 2, 8, torch.float32, seed=3)
    sharding = burst.Sharding(WORLD, "zigzag", cu_seqlens=cu)
    shards = [sharding.shard(t) for t in (q, k, v)]
    with pytest.raises(ValueError, match="ring-rsa: packed documents are not supported"):
        burst.attention(*shards, causal=True, sharding=sharding, strategy="ring-rsa")
    check_case(WORLD, strategy="ring-rsa", causal=True, n=5 * P + 1, cu_seqlens=[0, 5 * P + 1])


def test_packed_equals_documents_one_by_one():
    """The defining property: attention over a packed batch is each document's attention on
    its own, bitwise on one rank (the same kernel sees the same keys)."""
    if P > 1:
        pytest.skip("one rank: the documents alone run on it")
    cu = offsets(MIXED)
    q, k, v, _ = random_inputs(2, cu[-1], 4, 2, 16, torch.float32, seed=4)
    packed = burst.attention(q, k, v, causal=True, cu_seqlens=cu)
    alone = torch.cat([burst.attention(q[:, a:b], k[:, a:b], v[:, a:b], causal=True) for a, b in zip(cu, cu[1:])], 1)
    assert torch.equal(packed, alone)


def test_call_forms_agree():
    """cu_seqlens as an int32 or int64 tensor, a list or a tuple; held by the sharding or given
    to the call; the group=/layout= form; the module with per-batch cu_seqlens: one result."""
    cu = offsets(MIXED)
    n = cu[-1]
    q, k, v, _ = random_inputs(1, n, 4, 2, 8, torch.float32, seed=5)
    base = burst.Sharding(WORLD, "doc-zigzag", causal=True)
    sharding = base.with_documents(cu)
    assert sharding.cu_seqlens.tolist() == cu and base.cu_seqlens is None
    shards = [sharding.shard(t) for t in (q, k, v)]
    want = burst.attention(*shards, causal=True, sharding=sharding)
    forms = [torch.tensor(cu, dtype=torch.int32), torch.tensor(cu), cu, tuple(cu)]
    for form in forms:
        assert torch.equal(burst.attention(*shards, causal=True, sharding=sharding, cu_seqlens=form), want)
        assert torch.equal(burst.attention(*shards, causal=True, group=WORLD if _is_group() else None,
                                           comm=None if _is_group() else WORLD, layout="doc-zigzag",
                                           cu_seqlens=form, seqlen=n), want)
    module = burst.nn.BurstAttention(sharding=base, causal=True)
    assert torch.equal(module(*shards, cu_seqlens=forms[0]), want)
    assert torch.equal(burst.nn.BurstAttention(sharding=sharding, causal=True)(*shards), want)
    # Layouts that ignore the mask take documents per call on a sharding without them.
    plain = burst.Sharding(WORLD, "striped")
    striped = [plain.shard(t) for t in (q, k, v)]
    got = plain.gather(burst.attention(*striped, causal=True, sharding=plain, cu_seqlens=cu))
    tol = ref.forward_tolerance(8, n, ref.max_abs_score(q, k))
    assert ref.relative_error(got, ref.attention(q, k, v, causal=True, documents=cu)) <= tol


def test_varlen_call_shape():
    """flash-attn's varlen call shape ([total, h, d], cu_seqlens_q/k, max_seqlen_q/k) gives
    burst.attention's result bitwise, forward and gradients, on one rank or sharded, and agrees
    with the float64 reference."""
    cu = offsets(MIXED)
    n = cu[-1]
    longest = max(b - a for a, b in zip(cu, cu[1:]))
    q, k, v, dout = random_inputs(1, n, 4, 2, 16, torch.float32, seed=6)
    sharding = burst.Sharding(WORLD, "doc-zigzag", causal=True).with_documents(cu)
    shards = [sharding.shard(t).detach().requires_grad_() for t in (q, k, v)]
    packed = [t.detach().squeeze(0).requires_grad_() for t in shards]
    cu_tensor = torch.tensor(cu, dtype=torch.int32)
    out, lse = burst.flash_attn_varlen_func(*packed, cu_tensor, cu_tensor, longest, longest, causal=True,
                                            sharding=sharding, return_lse=True)
    want, want_lse = burst.attention(*shards, causal=True, sharding=sharding, return_lse=True)
    assert out.shape == packed[0].shape and lse.shape == (4, packed[0].shape[0])
    assert torch.equal(out, want.squeeze(0)) and torch.equal(lse, want_lse.squeeze(0))
    g = sharding.shard(dout).squeeze(0)
    out.backward(g)
    want.backward(g.unsqueeze(0))
    for a, b in zip(packed, shards):
        assert torch.equal(a.grad, b.grad.squeeze(0))
    got = sharding.gather(out.detach().unsqueeze(0))
    tol = ref.forward_tolerance(16, n, ref.max_abs_score(q, k))
    assert ref.relative_error(got, ref.attention(q, k, v, causal=True, documents=cu)) <= tol


@pytest.mark.parametrize("change, message", [
    ({"dropout_p": 0.1}, "dropout_p: expected 0.0"),
    ({"softcap": 30.0}, "softcap: expected 0.0"),
    ({"alibi_slopes": torch.ones(4)}, "alibi_slopes: expected None"),
    ({"block_table": torch.zeros(1)}, "block_table: expected None"),
    ({"return_attn_probs": True}, "return_attn_probs: expected False"),
    ({"cu_seqlens_k": [0, 5, 10]}, "cu_seqlens_k: expected the offsets of cu_seqlens_q"),
    ({"max_seqlen_q": 3}, "max_seqlen_q: expected an int >= the longest document (6 tokens), got 3"),
    ({"q": torch.zeros(1, 10, 2, 8)}, "q: expected a [total, heads, head_dim] tensor"),
])
def test_varlen_refusals(change, message):
    """What Burst cannot do in flash-attn's varlen call is refused by name, before any work."""
    t = torch.randn(10, 2, 8)
    call = {"q": t, "k": t, "v": t, "cu_seqlens_q": [0, 4, 10], "cu_seqlens_k": [0, 4, 10], "max_seqlen_q": 6,
            "max_seqlen_k": 6}
    call.update(change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        burst.varlen_attention(**call)


def _is_group():
    return WORLD is not None and type(WORLD).__module__.split(".")[0] == "torch"


def test_gather_is_the_inverse_of_shard():
    x = (torch.randn(2, offsets(MIXED)[-1], 3, generator=torch.Generator().manual_seed(6)) * 100).to(torch.int64)
    for layout in ALL_LAYOUTS:
        for causal, window in [(False, None), (True, None), (True, (3, 0))]:
            sharding = burst.Sharding(WORLD, layout, cu_seqlens=offsets(MIXED), causal=causal, window_size=window)
            local = sharding.shard(x)
            assert local.shape[1] == sharding.local_length() == len(sharding.positions())
            assert torch.equal(sharding.gather(local), x)
            assert torch.equal(burst.gather(local, WORLD, layout, cu_seqlens=offsets(MIXED), causal=causal,
                                            window_size=window), x)


def _doc_zigzag_by_definition(cu, p):
    """doc-zigzag where every document has at least 2P tokens (layout.h): document d's 2P
    chunks in pairs (c, 2P-1-c), pair c to rank (c + d) mod P."""
    shards = [[] for _ in range(p)]
    for d, (a, b) in enumerate(zip(cu, cu[1:])):
        length = b - a
        start = lambda c: a + c * length // (2 * p)  # noqa: E731
        for c in range(p):
            rank = (c + d) % p
            shards[rank] += list(range(start(c), start(c + 1))) + list(range(start(2 * p - 1 - c), start(2 * p - c)))
    return [sorted(s) for s in shards]


def _row_work(n, causal, window, cu):
    mask = ref.visible(n, causal, window, cu)
    return mask.sum(dim=1).tolist()


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_mask_layout_helpers(world_size):
    """positions of doc-zigzag (written out for long documents) and balanced (contiguous runs
    in rank order, cut near equal work); every token on exactly one rank; shard and unshard
    inverse; document_positions restart at every document."""
    p = world_size
    long_docs = offsets([2 * p, 2 * p + 3, 5 * p + 1])
    got = [burst.positions(long_docs[-1], p, r, "doc-zigzag", cu_seqlens=long_docs, causal=True).tolist()
           for r in range(p)]
    assert got == _doc_zigzag_by_definition(long_docs, p)
    for cu in (offsets([1] * 13), offsets(PATTERNS["many-tiny"]), offsets([3, 40, 1, 2, 51])):
        n = cu[-1]
        if n < p:
            continue
        for layout in burst.MASK_LAYOUTS:
            for causal, window in [(False, None), (True, None), (False, (2, 1))]:
                mask = dict(cu_seqlens=cu, causal=causal, window_size=window)
                shards = [burst.positions(n, p, r, layout, **mask).tolist() for r in range(p)]
                assert sorted(sum(shards, [])) == list(range(n)) and all(shards)
                assert all(s == sorted(s) for s in shards)
                if layout == "balanced":
                    assert sum(shards, []) == list(range(n))  # contiguous, in rank order
                    work = _row_work(n, causal, window, cu)
                    share = [sum(work[t] for t in s) for s in shards]
                    # Cuts land within a row of the ideal one, unless a rank needs its token.
                    slack = 2 * max(work)
                    assert all(w <= sum(work) / p + slack or len(s) == 1 for w, s in zip(share, shards)), share
                x = torch.arange(2 * n).view(1, n, 2)
                parts = [burst.shard(x, p, r, layout, **mask) for r in range(p)]
                for r in range(p):
                    assert torch.equal(parts[r], x[:, shards[r]])
                assert torch.equal(burst.unshard(parts, layout, **mask), x)
    cu = offsets([3, 1, 4])
    assert burst.document_positions(torch.arange(8), cu).tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    assert burst.document_positions([5, 3], torch.tensor(cu, dtype=torch.int32)).tolist() == [1, 0]


def test_attention_layer_packed_equals_its_documents():
    """burst.nn.AttentionLayer on a packed batch against the float64 layer applied to each
    document alone (attention inside the document, rotary positions from 0 in each)."""
    torch.manual_seed(7)
    cu = offsets([5, 2 * P + 3, 1, 9])
    layer = burst.nn.AttentionLayer(32, 4, 2, sharding=burst.Sharding(WORLD, "balanced", causal=True))
    x = torch.randn(2, cu[-1], 32)
    batch = layer.sharding.with_documents(cu)
    y = layer(batch.shard(x), cu_seqlens=cu)
    parts = [_layer_reference(layer, x[:, a:b]) for a, b in zip(cu, cu[1:])]
    want = torch.cat([w for w, _ in parts], dim=1)
    tol = layer_tolerance(layer, cu[-1], max(s for _, s in parts))
    assert ref.relative_error(batch.gather(y.detach()), want.detach()) <= tol
    y.sum().backward()
    assert all(torch.isfinite(w.grad).all() for w in layer.parameters())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.filterwarnings("ignore:Input #")
def test_gradcheck(causal):
    if P > 1:
        pytest.skip("one rank")
    q, k, v, _ = random_inputs(1, 6, 2, 1, 4, torch.float32, seed=8)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    fn = lambda a, b, c: burst.attention(a, b, c, causal=causal, cu_seqlens=[0, 1, 4, 6])  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=2e-3, rtol=2e-3)


def _bad_calls():
    cu = offsets(MIXED)
    n = cu[-1]
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=9)
    sharding = burst.Sharding(WORLD, "zigzag")
    shards = [sharding.shard(t) for t in (q, k, v)]
    balanced = burst.Sharding(WORLD, "balanced", causal=True, cu_seqlens=cu)
    balanced_shards = [balanced.shard(t) for t in (q, k, v)]
    bare = burst.Sharding(WORLD, "doc-zigzag")

    def call(**options):
        return lambda: burst.attention(*shards, sharding=sharding, **options)

    return [
        ("cu_seqlens: expected dtype torch.int32 or torch.int64, got torch.float32",
         call(cu_seqlens=torch.tensor(cu, dtype=torch.float32))),
        ("cu_seqlens: expected a 1-D tensor of D \\+ 1 offsets, got shape \\[1, 7\\]",
         call(cu_seqlens=torch.tensor([cu]))),
        ("cu_seqlens: expected a CPU tensor, got device meta", call(cu_seqlens=torch.empty(3, device="meta"))),
        ("cu_seqlens: expected the first offset to be 0, got 1", call(cu_seqlens=[1, n])),
        ("cu_seqlens: expected increasing offsets .* got 4 then 4 at index 2", call(cu_seqlens=[0, 4, 4, n])),
        ("cu_seqlens: expected at least 2 offsets", call(cu_seqlens=[0])),
        (f"cu_seqlens: expected the last offset to be the sequence length {n} \\(the sum of the ranks' shard "
         f"lengths\\), got {n - 1}", call(cu_seqlens=[0, 3, n - 1])),
        (f"cu_seqlens: expected the last offset to be the sequence length {n} \\(the seqlen argument\\), got "
         f"{n + 1}", call(cu_seqlens=[0, n + 1], seqlen=n)),
        ("cu_seqlens: .* disagrees with the sharding's cu_seqlens",
         lambda: burst.attention(*balanced_shards, sharding=balanced, causal=True, cu_seqlens=[0, n])),
        ("causal: False, but the sharding's balanced layout placed the tokens by its mask",
         lambda: burst.attention(*balanced_shards, sharding=balanced)),
        ("window_size: \\(4, 0\\), but the sharding's balanced layout",
         lambda: burst.attention(*balanced_shards, sharding=balanced, causal=True, window_size=(4, 0))),
        ("cu_seqlens: .* made without documents; shard the inputs with sharding.with_documents",
         lambda: burst.attention(*shards, sharding=bare, cu_seqlens=cu)),
        ("causal: True, but the sharding's doc-zigzag layout",
         lambda: burst.nn.BurstAttention(sharding=bare, causal=True)),
        ("cu_seqlens: expected the last offset to be the sequence length 5",
         lambda: burst.shard(torch.zeros(1, 5), 1, 0, "doc-zigzag", cu_seqlens=[0, 3])),
        ("cu_seqlens: expected the last offset to be the sequence length 9",
         lambda: burst.positions(9, 1, 0, "balanced", cu_seqlens=[0, 3, 8])),
        ("layout: expected one of contiguous, zigzag, striped for a prefill",
         lambda: burst.KvCache(1, 2, 8, comm=WORLD).prefill(*shards, layout="balanced")),
        ("seqlen: expected the sequence length", lambda: bare.positions()),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_arguments_raise_value_error_on_every_rank(index):
    message, call = _bad_calls()[index]
    with pytest.raises(ValueError, match=message):
        call()


def test_wrong_types_raise_type_error():
    q, k, v, _ = random_inputs(1, P, 1, 1, 8, torch.float32, seed=10)
    sharding = burst.Sharding(WORLD, "contiguous")
    for bad, message in [("0,4", "expected a 1-D int32 or int64 tensor or a sequence of ints, got str"),
                         (4, "expected .* got int 4"),
                         ([0, 2.0], "expected a sequence of ints, got float 2.0 at index 1")]:
        with pytest.raises(TypeError, match=f"cu_seqlens: {message}"):
            burst.attention(q, k, v, sharding=sharding, cu_seqlens=bad)


@pytest.mark.skipif(P == 1, reason="needs two ranks")
def test_disagreeing_documents_raise_comm_error_on_every_rank():
    """Ranks whose cu_seqlens differ (with the same total) fail alike, naming the setting."""
    n = 4 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=11)
    sharding = burst.Sharding(WORLD, "contiguous")
    shards = [sharding.shard(t) for t in (q, k, v)]
    with pytest.raises(burst.CommError, match="ranks disagree: rank 1 has documents"):
        burst.attention(*shards, sharding=sharding, cu_seqlens=[0, 2 + (RANK == 1), n])
    burst.attention(*shards, sharding=sharding, cu_seqlens=[0, 2, n])
