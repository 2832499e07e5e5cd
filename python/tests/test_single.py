"""The Python module on one rank (comm=None): attention and its gradients against torch's
float64 attention, gradcheck, the layout helpers, and the errors of bad arguments.
Run: PYTHONPATH=build/python python3 -m pytest python/tests/test_single.py"""

import attention_reference as ref
import pytest
import torch
from cases import check_case, random_inputs

import burst

STRATEGIES = ["burst", "ring", "allgather", "ulysses", "ring-rsa", "usp"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_strategies_match_torch(strategy, causal, heads):
    check_case(strategy=strategy, causal=causal, hq=heads[0], hkv=heads[1])


@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("window,causal", [((3, 2), False), (5, True), ((0, 0), False), ((-1, 4), False)])
def test_windows(layout, window, causal):
    check_case(layout=layout, causal=causal, window=window)


@pytest.mark.parametrize("shape", [dict(b=1, n=1, d=8), dict(b=3, n=97, d=24), dict(b=1, n=130, d=64, hq=8, hkv=1)],
                         ids=["one-token", "97-tokens", "mqa-130"])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes(shape, causal):
    check_case(causal=causal, **shape)


@pytest.mark.parametrize("strategy", ["burst", "ulysses"])
@pytest.mark.parametrize("causal", [False, True])
def test_bf16(strategy, causal):
    check_case(strategy=strategy, causal=causal, dtype=torch.bfloat16, n=61)


def test_options():
    check_case(scale=0.3, causal=True)
    check_case(threads=2, n=200, causal=True)
    for scheme in ["q", "kv"]:
        check_case(backward_scheme=scheme, causal=True)


def test_tolerance_tells_masks_apart():
    """The written tolerance is tight enough to see a wrong mask: the non-causal result misses
    the causal reference by orders of magnitude more than the tolerance allows."""
    q, k, v, _ = random_inputs(2, 37, 4, 2, 16, torch.float32, seed=3)
    out = burst.attention(q, k, v, causal=False)
    err = ref.relative_error(out, ref.attention(q, k, v, causal=True))
    assert err > 1000 * ref.forward_tolerance(16, 37, ref.max_abs_score(q, k))


def test_result_is_an_ordinary_tensor():
    """torch keeps using what the op returns: .grad accumulation over two backward passes,
    non-contiguous inputs ([b, h, s, d] storage), and torch's version check (the backward
    reads the saved output, as torch's own softmax does, so changing it in place is caught)."""
    q, k, v, dout = random_inputs(1, 20, 2, 2, 8, torch.float32, seed=4)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # strides of [b, h, s, d]
    assert not qt.is_contiguous()
    kk, vv = k.clone().requires_grad_(), v.clone().requires_grad_()
    out = burst.attention(qt, kk, vv, causal=True)
    (out * dout).sum().backward()
    first = qt.grad.clone()
    out2 = burst.attention(qt, kk, vv, causal=True)
    ((out2 + 1.0) * dout).sum().backward()
    torch.testing.assert_close(qt.grad, 2 * first, rtol=1e-6, atol=1e-6)
    out3 = burst.attention(qt, kk, vv, causal=True)
    out3.add_(1.0)
    with pytest.raises(RuntimeError, match="inplace"):
        out3.sum().backward()
    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    expected = ref.attention(*leaves, causal=True)
    assert ref.relative_error(out.detach(), expected.detach()) <= ref.forward_tolerance(8, 20, ref.max_abs_score(q, k))


def test_run_twice_bitwise():
    q, k, v, dout = random_inputs(2, 45, 4, 2, 16, torch.float32, seed=5)
    results = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = burst.attention(*leaves, causal=True)
        out.backward(dout)
        results.append([out.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.equal(a, b)


class _DropGradient(torch.autograd.Function):
    """Passes x on and claims a zero gradient: a deliberately wrong backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


def _gradcheck(fn, inputs):
    # fp32 inputs: central differences with eps 1e-3 carry ~1e-7 / 1e-3 = 1e-4 of rounding
    # and ~eps^2 of truncation error, so 2e-3 separates them from a wrong gradient (the
    # negative control below misses by 1e-2 x |q|).
    return torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=2e-3, rtol=2e-3, raise_exception=False)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, (1, 2))])
@pytest.mark.filterwarnings("ignore:Input #")
def test_gradcheck(causal, window):
    q, k, v, _ = random_inputs(1, 5, 2, 1, 4, torch.float32, seed=6)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    assert _gradcheck(lambda a, b, c: burst.attention(a, b, c, causal=causal, window=window), inputs)
    # The same check must reject a gradient that is wrong by 1e-2 q.
    wrong = lambda a, b, c: burst.attention(a, b, c, causal=causal, window=window) + 1e-2 * _DropGradient.apply(a)  # noqa: E731
    assert not _gradcheck(wrong, inputs)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("layout", burst.LAYOUTS)
@pytest.mark.parametrize("n", [5, 7, 13, 97])
def test_layout_helpers(world_size, layout, n):
    """positions follow the layouts' definitions (written out here independently); shard and
    unshard are inverse; every token lands on exactly one rank."""
    if n < world_size:
        pytest.skip("fewer tokens than ranks")
    p = world_size
    if layout == "contiguous":
        want = [list(range(r * n // p, (r + 1) * n // p)) for r in range(p)]
    elif layout == "striped":
        want = [list(range(r, n, p)) for r in range(p)]
    elif n >= 2 * p:
        chunk = lambda c: list(range(c * n // (2 * p), (c + 1) * n // (2 * p)))  # noqa: E731
        want = [chunk(r) + chunk(2 * p - 1 - r) for r in range(p)]
    else:  # too short for 2P chunks: token r, and token n-1-r while tokens remain
        want = [[r] + ([n - 1 - r] if r < n - p else []) for r in range(p)]
    got = [burst.positions(n, p, r, layout).tolist() for r in range(p)]
    assert got == want
    assert sorted(sum(got, [])) == list(range(n))
    x = torch.randn(2, n, 3, 4).to(torch.bfloat16)
    shards = [burst.shard(x, r, p, layout) for r in range(p)]
    for r in range(p):
        assert torch.equal(shards[r], x[:, got[r]])
    assert torch.equal(burst.unshard(shards, layout), x)
    assert torch.equal(burst.gather(x, None, layout), x)


def _bad_calls():
    q, k, v, _ = random_inputs(2, 9, 4, 2, 8, torch.float32, seed=7)
    return [
        ("q", lambda: burst.attention(q[0], k, v)),
        ("k", lambda: burst.attention(q, k[..., :4], v[..., :4])),
        ("v", lambda: burst.attention(q, k, v[..., :4])),
        ("v", lambda: burst.attention(q, k, v[:, :, :1])),
        ("k", lambda: burst.attention(q, torch.randn(2, 9, 3, 8), torch.randn(2, 9, 3, 8))),
        ("q", lambda: burst.attention(q.double(), k.double(), v.double())),
        ("k", lambda: burst.attention(q, k.bfloat16(), v)),
        ("strategy", lambda: burst.attention(q, k, v, strategy="flash")),
        ("layout", lambda: burst.attention(q, k, v, layout="spiral")),
        ("backward_scheme", lambda: burst.attention(q, k, v, backward_scheme="both")),
        ("seqlen", lambda: burst.attention(q, k, v, seqlen=0)),
        ("tokens", lambda: burst.attention(q, k, v, seqlen=10)),
        ("window", lambda: burst.attention(q, k, v, window=-2)),
        ("window", lambda: burst.attention(q, k, v, window="wide")),
        ("scale", lambda: burst.attention(q, k, v, scale=float("nan"))),
        ("threads", lambda: burst.attention(q, k, v, threads=0)),
        ("ulysses_degree", lambda: burst.attention(q, k, v, strategy="usp", ulysses_degree=2)),
        ("q", lambda: burst.attention(torch.randn(1, 4, 1, 300), torch.randn(1, 4, 1, 300), torch.randn(1, 4, 1, 300))),
        ("layout", lambda: burst.positions(10, 2, 0, "diagonal")),
        ("rank", lambda: burst.positions(10, 2, 2, "contiguous")),
        ("shards", lambda: burst.unshard([])),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_arguments_raise_value_error(index):
    name, call = _bad_calls()[index]
    with pytest.raises(ValueError, match=name):
        call()


def test_wrong_types_raise_type_error():
    q, k, v, _ = random_inputs(1, 4, 1, 1, 8, torch.float32, seed=8)
    with pytest.raises(TypeError, match="q"):
        burst.attention(q.numpy(), k, v)
    with pytest.raises(TypeError):
        burst.attention(q, k, v, comm="world")


def test_communicator():
    c = burst.Communicator(timeout=2.5)
    assert (c.rank, c.world_size, c.timeout) == (0, 1, 2.5)
    with pytest.raises(ValueError, match="timeout"):
        c.timeout = 0
    q, k, v, _ = random_inputs(1, 6, 2, 2, 8, torch.float32, seed=9)
    torch.testing.assert_close(burst.attention(q, k, v, comm=c), burst.attention(q, k, v), rtol=0, atol=0)
    assert issubclass(burst.CommError, RuntimeError) and issubclass(burst.CommTimeoutError, burst.CommError)
