"""The Python module across torch.distributed ranks (torchrun, gloo, no MPI): every strategy
and layout against torch's float64 attention of the whole sequence (forward, lse, backward)
and the strategy's byte formula, sub-groups and a data x sequence mesh, the nn modules,
errors every rank raises alike, and a deadline surfacing as burst.CommTimeoutError. Every
rank runs the same tests in the same order, so their collectives pair up.
Run: PYTHONPATH=build/python python3 python/tests/torchrun.py --nproc_per_node 4 \\
         -m pytest python/tests/test_torch.py"""

import os
import subprocess
import sys
import time

import attention_reference as ref
import pytest
import torch
import torch.distributed as dist
from cases import check_case, random_inputs
from test_single import _layer_reference, layer_tolerance

import burst
from burst import _burst

dist.init_process_group("gloo")
WORLD = dist.group.WORLD
P = dist.get_world_size()
RANK = dist.get_rank()
STRATEGIES = [s for s in burst.STRATEGIES if s != "local"]


def _options(strategy):
    # USP: Ulysses groups of 2 ranks, the ring across the groups.
    return {"ulysses_degree": 2} if strategy == "usp" else {}


def _cannot_run(strategy, ranks, hq, hkv, d=16):
    """Why the library's table says the strategy cannot run this problem; "" when it can."""
    settings = _burst.make_settings(strategy=strategy, layout="zigzag", seqlen=64, causal=False, window_left=-1,
                                    window_right=-1, scale=None, backward_scheme="auto",
                                    ulysses_degree=_options(strategy).get("ulysses_degree", 1), threads=1)
    return _burst.cannot_run(settings, 1, hq, hkv, d, ranks)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2)], ids=["mha", "gqa"])
def test_strategies_match_torch(strategy, layout, causal, heads):
    why = _cannot_run(strategy, P, *heads)
    if why:
        pytest.skip(why)
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, hq=heads[0], hkv=heads[1], n=8 * P + 5,
               **_options(strategy))


@pytest.mark.parametrize("strategy", ["burst", "ring", "allgather", "ring-rsa"])
@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("window,causal", [((3, 2), False), ((5, 0), True)])
def test_windows(strategy, layout, window, causal):
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, window=window, n=9 * P + 2)


@pytest.mark.parametrize("strategy", ["burst", "ulysses", "allgather"])
def test_bf16(strategy):
    check_case(WORLD, strategy=strategy, layout="zigzag", causal=True, hq=8, hkv=4, dtype=torch.bfloat16,
               n=10 * P + 3)


@pytest.mark.parametrize("scheme", ["q", "kv"])
def test_backward_schemes(scheme):
    check_case(WORLD, causal=True, backward_scheme=scheme, n=7 * P + 1)


def test_sub_groups():
    """Groups of some ranks only: the even and the odd ranks run their own problems at once
    (every rank makes both groups, as torch.distributed.new_group requires)."""
    groups = [dist.new_group(list(range(parity, P, 2))) for parity in (0, 1)]
    mine = groups[RANK % 2]
    check_case(mine, causal=True, n=6 * mine.size() + 1, seed=20 + RANK % 2)


@pytest.mark.skipif(P % 2 != 0, reason="the mesh needs an even world")
def test_data_by_sequence_mesh():
    """P = 2 data x P/2 sequence ranks: each data replica shards its own batch over its
    sequence group; the gradients of a replica's inputs match the float64 reference."""
    seq_groups = [dist.new_group(list(range(r, r + P // 2))) for r in (0, P // 2)]
    replica = RANK // (P // 2)
    report = check_case(seq_groups[replica], strategy="burst", causal=True, n=5 * P + 3, seed=30 + replica)
    assert report["bytes"]["forward"] > 0 or P == 2


def test_group_comm_and_sharding_forms_agree():
    """group=, comm= (a group too) and sharding= are one communicator, and layout= still
    names the layout of hand-made shards."""
    n = 5 * P + 3
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=11)
    sharding = burst.Sharding(WORLD, "striped")
    assert (sharding.rank, sharding.world_size) == (RANK, P)
    assert sharding.communicator.backend == "torch.distributed (gloo)"
    shards = [sharding.shard(t) for t in (q, k, v)]
    a = burst.attention(*shards, causal=True, sharding=sharding)
    b = burst.attention(*shards, causal=True, group=WORLD, layout="striped", seqlen=n)
    c = burst.attention(*shards, causal=True, comm=WORLD, layout="striped")
    d = burst.nn.BurstAttention(WORLD, layout="striped", causal=True)(*shards)
    for other in (b, c, d):
        assert torch.equal(a, other)
    assert torch.equal(sharding.gather(a), burst.gather(b, group=WORLD, layout="striped"))


def test_default_layout_is_zigzag():
    """burst.shard and burst.attention without layout= pair up (the issue's error 0.65)."""
    n = 6 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=12)
    shards = [burst.shard(t, P, RANK) for t in (q, k, v)]
    out = burst.attention(*shards, causal=True, group=WORLD)
    got = burst.gather(out, group=WORLD)
    want = ref.attention(q, k, v, causal=True)
    assert ref.relative_error(got, want) <= ref.forward_tolerance(8, n, ref.max_abs_score(q, k))
    assert torch.equal(burst.positions(n, P, RANK), burst.Sharding(WORLD).positions(n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_gather_is_the_inverse_of_shard(dtype):
    x = (torch.randn(2, 4 * P + 3, 5, generator=torch.Generator().manual_seed(13)) * 100).to(dtype)
    for layout in burst.LAYOUTS:
        sharding = burst.Sharding(WORLD, layout)
        assert torch.equal(sharding.gather(sharding.shard(x)), x)
        assert torch.equal(sharding.gather(sharding.shard(x, dim=-1), dim=-1), x) or x.shape[-1] < P


def test_attention_layer_over_the_group():
    """burst.nn.AttentionLayer on shards against the float64 layer on the whole sequence: the
    output, and the weight gradients summed over the ranks (each rank's are its tokens' share)."""
    torch.manual_seed(14)
    sharding = burst.Sharding(WORLD)
    layer = burst.nn.AttentionLayer(32, 4, 2, sharding=sharding)
    x = torch.randn(2, 7 * P + 2, 32)
    y = layer(sharding.shard(x))
    y.sum().backward()
    weights = {name: getattr(layer, name).weight.detach().double().requires_grad_()
               for name in ("wq", "wk", "wv", "wo")}
    want, s_max = _layer_reference(layer, x, weights)
    want.sum().backward()
    tol = layer_tolerance(layer, x.shape[1], s_max)
    assert ref.relative_error(sharding.gather(y.detach()), want.detach()) <= tol
    # Gradients: attention's backward bound and the same product terms as the output.
    grad_tol = ref.backward_tolerance(layer.head_dim, x.shape[1], s_max) + tol
    for name, w in weights.items():
        g = getattr(layer, name).weight.grad.clone()
        dist.all_reduce(g)
        err = ref.relative_error(g, w.grad)
        assert err <= grad_tol, f"{name}: gradient error {err:.3g} > {grad_tol:.3g}"


def test_wrong_seqlen_raises_value_error_on_every_rank():
    n = 4 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=15)
    sharding = burst.Sharding(WORLD, "contiguous")
    shards = [sharding.shard(t) for t in (q, k, v)]
    with pytest.raises(ValueError, match="tokens"):
        burst.attention(*shards, sharding=sharding, seqlen=n + P)


def test_disagreeing_ranks_raise_comm_error_on_every_rank():
    """Ranks that disagree are a communication failure, not a bad argument of this rank:
    burst.CommError naming the setting and both values. No transfer failed, so the group
    stays usable."""
    n = 4 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=16)
    sharding = burst.Sharding(WORLD, "contiguous")
    shards = [sharding.shard(t) for t in (q, k, v)]
    with pytest.raises(burst.CommError, match="ranks disagree: rank 1 has causal true but rank 0 has false"):
        burst.attention(*shards, sharding=sharding, causal=RANK == 1)
    burst.attention(*shards, sharding=sharding, causal=True)


def test_deadline_raises_comm_timeout_error():
    """Rank 0 calls attention on a group the others never use: its wait for rank P-1's part of
    the opening all-gather passes the deadline, within it plus scheduling. The failure closes
    that group only."""
    lonely = dist.new_group(list(range(P)))
    comm = burst.Communicator(group=lonely, timeout=0.5)
    if RANK == 0:
        q, k, v, _ = random_inputs(1, 3, 1, 1, 8, torch.float32, seed=17)
        started = time.monotonic()
        with pytest.raises(burst.CommTimeoutError, match=f"from rank {P - 1} .*deadline") as caught:
            burst.attention(q, k, v, comm=comm, seqlen=3 * P)
        assert time.monotonic() - started < 0.5 + 5.0
        assert isinstance(caught.value, RuntimeError)
        assert "no connection of the group was closed" in str(caught.value)
        with pytest.raises(burst.CommError, match="closed after an earlier failure"):
            burst.attention(q, k, v, comm=comm, seqlen=3 * P)
    dist.barrier()


def test_mpi4py_is_never_imported():
    assert "mpi4py" not in sys.modules


def test_llama_training_on_a_data_by_sequence_mesh():
    """examples/llama/torchrun_train.py on a small scale: D data x S sequence ranks (2 x 2 on
    4 processes, 1 x 2 on 2) follow the one-process training loss for loss, and every rank
    ends with bitwise the same weights. Every rank computes the one-process run itself."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "llama"))
    import torchrun_train
    from fidelity import load_corpus
    from model import Config, TinyLlama

    train_data, _ = load_corpus()
    cfg = Config(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden=88)
    steps, batch, seqlen = 4, 2, 96
    runs = []
    for mesh in (torchrun_train.Mesh.single(), torchrun_train.Mesh(2 if P % 4 == 0 else 1)):
        torch.manual_seed(0)
        model = TinyLlama(cfg)
        sharding = burst.Sharding(mesh.sequence_group)
        losses, _ = torchrun_train.train_steps(model, train_data, mesh, sharding, steps, batch, seqlen, 3e-3, seed=0)
        runs.append((losses, model, mesh))
    (want, _, _), (got, model, mesh) = runs
    # As test_fidelity.py: fp32 summation orders (attention, loss, all-reduce), ~1e-7 relative.
    worst = max(abs(a - b) / b for a, b in zip(got, want))
    assert worst <= 2e-6, f"{mesh.data} x {mesh.sequence} ranks: losses {got} vs {want}"
    assert want[-1] < want[0]
    assert torchrun_train.weights_agree(model, mesh)


def test_groups_this_rank_cannot_use():
    """A group this rank is not a member of, and no group at all in a torchrun job that has
    not initialised torch.distributed (dist.group.WORLD is None then): both refused, never
    run on this process alone."""
    first = dist.new_group([0])
    if RANK != 0:
        with pytest.raises(ValueError, match="not a member of the group"):
            burst.Sharding(first)
    if RANK == 0:
        code = ("import torch, burst; q = torch.randn(1, 4, 1, 8)\n"
                "try:\n    burst.attention(q, q, q, group=None)\n"
                "except ValueError as e:\n    print(e)\n")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert "has not called torch.distributed.init_process_group" in run.stdout, run.stdout + run.stderr
    dist.barrier()


def test_python_threads_run_during_a_call():
    """Burst computes and waits with the GIL released and takes it back only to post: a Python
    thread busy meanwhile keeps running, and the call neither stalls nor deadlocks on it."""
    import threading

    n = 256 * P
    q, k, v, _ = random_inputs(1, n, 4, 4, 64, torch.float32, seed=18)
    sharding = burst.Sharding(WORLD)
    shards = [sharding.shard(t) for t in (q, k, v)]
    count, stop = [0], threading.Event()

    def busy():
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        for _ in range(3):
            burst.attention(*shards, causal=True, sharding=sharding)
    finally:
        stop.set()
        thread.join()
    assert count[0] > 1000
