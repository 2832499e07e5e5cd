"""The Python module on one rank (comm=None): attention, its lse and gradients against
torch's float64 attention, gradcheck, the layout helpers and Sharding, the nn modules, the
flash-attn call shape, and the errors of bad arguments.
Run: PYTHONPATH=build/python python3 -m pytest python/tests/test_single.py"""

import inspect
import re

import attention_reference as ref
import pytest
import torch
from cases import check_case, random_inputs

import burst

STRATEGIES = list(burst.STRATEGIES)


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
    shards = [burst.shard(x, p, r, layout) for r in range(p)]
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
        # flash-attn's names and the sharding
        ("dropout_p", lambda: burst.attention(q, k, v, dropout_p=0.1)),
        ("window_size", lambda: burst.attention(q, k, v, window_size=3)),
        ("window_size", lambda: burst.attention(q, k, v, window_size=(2, -2))),
        ("window_size and window", lambda: burst.attention(q, k, v, window_size=(2, 2), window=2)),
        ("softmax_scale and scale", lambda: burst.attention(q, k, v, softmax_scale=0.5, scale=0.5)),
        ("softmax_scale", lambda: burst.attention(q, k, v, softmax_scale=float("inf"))),
        ("layout", lambda: burst.attention(q, k, v, layout="striped", sharding=burst.Sharding())),
        ("layout", lambda: burst.Sharding(None, "spiral")),
        ("strategy", lambda: burst.attention(q, k, v, strategy="tp-v1")),
        # shard's old argument order (x, rank, world_size) names a rank outside the world
        ("burst.shard takes \\(x, world_size, rank\\)", lambda: burst.shard(q, 1, 4)),
        ("burst.shard takes \\(x, world_size, rank\\)", lambda: burst.shard(q, 0, 2)),
        ("n_kv_heads", lambda: burst.nn.AttentionLayer(32, 4, 3)),
        ("head_dim", lambda: burst.nn.AttentionLayer(30, 4)),
        ("rope_base", lambda: burst.nn.AttentionLayer(32, 4, rope_base=0.5)),
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
    with pytest.raises(TypeError, match="comm: expected None, a torch.distributed ProcessGroup"):
        burst.attention(q, k, v, comm="world")
    with pytest.raises(TypeError, match="group: expected None, a torch.distributed ProcessGroup"):
        burst.Sharding(group=3)
    with pytest.raises(TypeError, match="sharding"):
        burst.attention(q, k, v, sharding="zigzag")
    with pytest.raises(TypeError, match="causal"):
        burst.attention(q, k, v, causal=None)


def test_arguments_after_v_are_keyword_only():
    """flash_attn_func(q, k, v, dropout_p, softmax_scale, causal) ported positionally, or an
    older burst call attention(q, k, v, True), is refused instead of running with a scale of
    float(True)."""
    q, k, v, _ = random_inputs(1, 4, 1, 1, 8, torch.float32, seed=8)
    for args in [(0.0, None, True), (True,)]:
        with pytest.raises(TypeError, match="keyword-only"):
            burst.attention(q, k, v, *args)
    parameters = inspect.signature(burst.attention).parameters
    assert [name for name, p in parameters.items() if p.kind != p.KEYWORD_ONLY] == ["q", "k", "v"]
    assert {"softmax_scale", "causal", "window_size", "return_lse", "dropout_p"} <= set(parameters)


def test_flash_attn_names_match_the_older_ones():
    q, k, v, _ = random_inputs(2, 23, 4, 2, 8, torch.float32, seed=10)
    new = burst.attention(q, k, v, softmax_scale=0.4, causal=True, window_size=(5, -1), dropout_p=0.0)
    old = burst.attention(q, k, v, scale=0.4, causal=True, window=(5, -1))
    assert torch.equal(new, old)
    assert torch.equal(burst.attention(q, k, v, window_size=(-1, -1)), burst.attention(q, k, v))
    assert torch.equal(burst.attention(q, k, v, window_size=(3, 3)), burst.attention(q, k, v, window=3))


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, (2, 0)), (True, (0, 0))])
def test_lse(causal, window):
    """lse [b, h, s] against log-sum-exp of the float64 scores (natural log, scaled scores)."""
    q, k, v, _ = random_inputs(2, 29, 4, 2, 16, torch.float32, seed=11)
    out, lse = burst.attention(q, k, v, causal=causal, window_size=window, return_lse=True)
    assert lse.shape == (2, 4, 29) and lse.dtype == torch.float32 and not lse.requires_grad
    want = ref.lse(q, k, causal=causal, window=window)
    tol = ref.lse_tolerance(16, 29, ref.max_abs_score(q, k), want.abs().max().item())
    assert ref.lse_error(lse, want) <= tol
    assert torch.equal(out, burst.attention(q, k, v, causal=causal, window_size=window))


def test_lse_backward_ignores_lse():
    """lse is not differentiable: a loss on out alone gives the same gradients with or
    without return_lse, and lse carries no graph."""
    q, k, v, dout = random_inputs(1, 12, 2, 2, 8, torch.float32, seed=12)
    grads = []
    for return_lse in (False, True):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        result = burst.attention(*leaves, causal=True, return_lse=return_lse)
        out = result[0] if return_lse else result
        out.backward(dout)
        grads.append([t.grad for t in leaves])
        if return_lse:
            assert result[1].grad_fn is None
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_sharding_on_one_process():
    sharding = burst.Sharding()
    assert (sharding.world_size, sharding.rank, sharding.layout) == (1, 0, "zigzag")
    assert burst.DEFAULT_LAYOUT == "zigzag"
    x = torch.randn(2, 11, 3)
    assert torch.equal(sharding.shard(x), x) and torch.equal(sharding.gather(x), x)
    assert sharding.positions(11).tolist() == list(range(11)) and sharding.seqlen(11) == 11
    q, k, v, _ = random_inputs(1, 9, 2, 2, 8, torch.float32, seed=13)
    assert torch.equal(burst.attention(q, k, v, sharding=sharding, layout="zigzag"),
                       burst.attention(q, k, v))


def test_version_is_the_libraries():
    assert re.fullmatch(r"\d+\.\d+\.\d+", burst.__version__)
    assert burst.__version__ == burst._burst.__version__


def test_mpi4py_is_not_imported():
    """A torchrun user never needs mpi4py: importing burst and running it leaves it out."""
    import subprocess
    import sys

    code = ("import sys, torch, burst; q = torch.randn(1, 4, 1, 8); burst.attention(q, q, q, causal=True); "
            "burst.nn.BurstAttention()(q, q, q); print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("strategy", ["burst", "local"])
def test_burst_attention_module(strategy):
    q, k, v, dout = random_inputs(2, 17, 4, 2, 8, torch.float32, seed=14)
    module = burst.nn.BurstAttention(causal=True, strategy=strategy, softmax_scale=0.3)
    assert list(module.parameters()) == [] and "zigzag" in repr(module)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = module(*leaves)
    out.backward(dout)
    want = [t.clone().requires_grad_() for t in (q, k, v)]
    burst.attention(*want, causal=True, softmax_scale=0.3).backward(dout)
    assert torch.equal(out, burst.attention(q, k, v, causal=True, softmax_scale=0.3))
    for a, b in zip(leaves, want):
        assert torch.equal(a.grad, b.grad)
    out2, lse = module(q, k, v, return_lse=True)
    assert torch.equal(out2, out.detach()) and lse.shape == (2, 4, 17)


def _layer_reference(layer, x, weights=None, causal=True):
    """The layer's math in float64 with torch ops on the whole sequence: y, and the largest
    |score| (the S of the tolerance policy). weights: float64 wq, wk, wv, wo to use (default
    the layer's, detached)."""
    b, n, _ = x.shape
    h, g, d = layer.n_heads, layer.n_kv_heads, layer.head_dim
    x = x.double()
    w = weights or {name: getattr(layer, name).weight.detach().double() for name in ("wq", "wk", "wv", "wo")}
    q = (x @ w["wq"].T).view(b, n, h, d)
    k = (x @ w["wk"].T).view(b, n, g, d)
    v = (x @ w["wv"].T).view(b, n, g, d)
    pos = torch.arange(n)
    q, k = burst.nn.rotate(q, pos, layer.rope_base), burst.nn.rotate(k, pos, layer.rope_base)
    o = ref.attention(q, k, v, causal=causal)
    return o.reshape(b, n, h * d) @ w["wo"].T, ref.max_abs_score(q, k)


def layer_tolerance(layer, n, s_max):
    """Attention's forward bound plus the fp32 products around it: the input projections
    (length dim) and the output one (length n_heads head_dim), 2 u per term each, and a few
    roundings of the rotation."""
    dim, hd = layer.wq.in_features, layer.n_heads * layer.head_dim
    return ref.forward_tolerance(layer.head_dim, n, s_max) + 2 * ref.U * (dim + hd + 8)


def test_attention_layer_matches_float64():
    torch.manual_seed(15)
    layer = burst.nn.AttentionLayer(32, 4, 2)
    x = torch.randn(2, 21, 32)
    y = layer(x)
    want, s_max = _layer_reference(layer, x)
    assert y.shape == x.shape
    assert ref.relative_error(y.detach(), want.detach()) <= layer_tolerance(layer, 21, s_max)
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_communicator():
    c = burst.Communicator(timeout=2.5)
    assert (c.rank, c.world_size, c.timeout) == (0, 1, 2.5)
    with pytest.raises(ValueError, match="timeout"):
        c.timeout = 0
    q, k, v, _ = random_inputs(1, 6, 2, 2, 8, torch.float32, seed=9)
    torch.testing.assert_close(burst.attention(q, k, v, comm=c), burst.attention(q, k, v), rtol=0, atol=0)
    assert issubclass(burst.CommError, RuntimeError) and issubclass(burst.CommTimeoutError, burst.CommError)
