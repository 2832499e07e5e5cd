"""The Python module across MPI ranks (mpi4py): every strategy and layout against torch's
float64 attention of the whole sequence, errors that every rank raises alike, and a timeout
surfacing as burst.CommTimeoutError (a RuntimeError). Every rank runs the same tests in the
same order, so their collectives pair up.
Run: PYTHONPATH=build/python scripts/mpirun.sh -np 4 python3 -m pytest python/tests/test_mpi.py"""

import pytest
import torch
from cases import check_case, random_inputs
from mpi4py import MPI

import burst

WORLD = MPI.COMM_WORLD
P = WORLD.size
STRATEGIES = ["burst", "ring", "allgather", "ulysses", "ring-rsa", "usp"]


def _options(strategy):
    # USP: Ulysses groups of 2 ranks, the ring across the groups (needs an even world).
    return {"ulysses_degree": 2} if strategy == "usp" else {}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (8, 4)], ids=["mha", "gqa"])
def test_strategies_match_torch(strategy, layout, causal, heads):
    if strategy in ("ulysses", "usp") and heads[1] % P != 0:
        pytest.skip(f"{strategy} needs the heads divisible by the {P} ranks")
    if strategy == "usp" and P % 2 != 0:
        pytest.skip("usp with Ulysses groups of 2 needs an even world")
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, hq=heads[0], hkv=heads[1], n=8 * P + 5,
               **_options(strategy))


@pytest.mark.parametrize("strategy", ["burst", "ring", "allgather", "ring-rsa"])
@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("window,causal", [((3, 2), False), (5, True)])
def test_windows(strategy, layout, window, causal):
    check_case(WORLD, strategy=strategy, layout=layout, causal=causal, window=window, n=9 * P + 2)


@pytest.mark.parametrize("strategy", ["burst", "ulysses", "allgather"])
@pytest.mark.parametrize("layout", ["zigzag", "striped"])
def test_bf16(strategy, layout):
    check_case(WORLD, strategy=strategy, layout=layout, causal=True, hq=8, hkv=4, dtype=torch.bfloat16,
               n=10 * P + 3)


@pytest.mark.parametrize("scheme", ["q", "kv"])
def test_backward_schemes(scheme):
    check_case(WORLD, layout="zigzag", causal=True, backward_scheme=scheme, n=7 * P + 1)


def test_sub_communicator():
    """A communicator of some ranks only: the even ranks split off and run their own problem."""
    sub = WORLD.Split(WORLD.rank % 2, WORLD.rank)
    try:
        check_case(sub, layout="zigzag", causal=True, n=6 * sub.size + 1, seed=20 + WORLD.rank % 2)
    finally:
        sub.Free()


def test_explicit_seqlen_and_communicator():
    comm = burst.Communicator(WORLD, timeout=30)
    assert (comm.rank, comm.world_size) == (WORLD.rank, P)
    n = 5 * P + 3
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=11)
    shards = [burst.shard(t, P, WORLD.rank, "striped") for t in (q, k, v)]
    a = burst.attention(*shards, causal=True, layout="striped", comm=comm, seqlen=n)
    b = burst.attention(*shards, causal=True, layout="striped", comm=WORLD)
    assert torch.equal(a, b)
    assert torch.equal(burst.gather(a, comm, "striped"), burst.gather(b, WORLD, "striped"))


def test_gather_is_the_inverse_of_shard():
    x = torch.randn(2, 4 * P + 3, 5, generator=torch.Generator().manual_seed(12))
    for layout in burst.LAYOUTS:
        assert torch.equal(burst.gather(burst.shard(x, P, WORLD.rank, layout), WORLD, layout), x)


def test_wrong_seqlen_raises_value_error_on_every_rank():
    n = 4 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=13)
    shards = [burst.shard(t, P, WORLD.rank, "contiguous") for t in (q, k, v)]
    with pytest.raises(ValueError, match="tokens"):
        burst.attention(*shards, comm=WORLD, seqlen=n + P)


def test_disagreeing_ranks_raise_comm_error_on_every_rank():
    """Ranks that disagree are a communication failure (the CLI's exit status 3), not a bad
    argument of this rank: burst.CommError, a RuntimeError, naming the setting and both values."""
    n = 4 * P + 1
    q, k, v, _ = random_inputs(1, n, 2, 2, 8, torch.float32, seed=14)
    shards = [burst.shard(t, P, WORLD.rank, "contiguous") for t in (q, k, v)]
    with pytest.raises(burst.CommError, match="ranks disagree: rank 1 has causal true but rank 0 has false"):
        burst.attention(*shards, comm=WORLD, causal=WORLD.rank == 1)


def test_timeout_raises_runtime_error():
    """Rank 0 calls attention on a communicator the others never use: its wait for rank
    P-1's part of the opening all-gather passes the deadline."""
    comm = burst.Communicator(WORLD, timeout=0.5)
    if WORLD.rank == 0:
        q, k, v, _ = random_inputs(1, 3, 1, 1, 8, torch.float32, seed=15)
        with pytest.raises(burst.CommTimeoutError, match="deadline") as caught:
            burst.attention(q, k, v, comm=comm, seqlen=3 * P)
        assert isinstance(caught.value, RuntimeError)
    WORLD.Barrier()
