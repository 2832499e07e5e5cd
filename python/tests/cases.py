"""One attention case end to end, on whatever ranks `comm` spans: global random tensors (the
same on every rank, from the seed), this rank's shards through burst.attention and its
backward, the results gathered and compared with the float64 torch reference of the whole
problem under the written tolerances. Every rank checks the gathered results, so a failure
fails on all ranks alike and no rank is left waiting."""

import attention_reference as ref
import torch

import burst


def random_inputs(b, n, hq, hkv, d, dtype, seed):
    """q, k, v and the output gradient dout, standard normal, rounded to dtype."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, n, hq, d, generator=gen)
    k = torch.randn(b, n, hkv, d, generator=gen)
    v = torch.randn(b, n, hkv, d, generator=gen)
    dout = torch.randn(b, n, hq, d, generator=gen)
    return [t.to(dtype) for t in (q, k, v, dout)]


def check_case(comm=None, strategy="burst", layout="contiguous", causal=False, window=None, hq=4, hkv=2,
               d=16, n=37, b=2, dtype=torch.float32, seed=1, **options):
    """Runs one case and asserts its forward and gradient errors are within the tolerances;
    returns the errors and tolerances."""
    rank = 0 if comm is None else comm.rank
    world_size = 1 if comm is None else comm.size
    q, k, v, dout = random_inputs(b, n, hq, hkv, d, dtype, seed)
    shards = [burst.shard(t, rank, world_size, layout).requires_grad_() for t in (q, k, v)]
    out = burst.attention(*shards, causal=causal, window=window, strategy=strategy, layout=layout, comm=comm,
                          **options)
    assert out.dtype == dtype and out.shape == shards[0].shape
    out.backward(burst.shard(dout, rank, world_size, layout))
    for s in shards:
        assert s.grad.dtype == dtype and s.grad.shape == s.shape

    got = {name: burst.gather(t, comm, layout) for name, t in
           (("out", out), ("dq", shards[0].grad), ("dk", shards[1].grad), ("dv", shards[2].grad))}

    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    expected = ref.attention(*leaves, causal=causal, window=window, scale=options.get("scale"))
    expected.backward(dout.double())
    want = {"out": expected.detach(), "dq": leaves[0].grad, "dk": leaves[1].grad, "dv": leaves[2].grad}

    s_max = ref.max_abs_score(q, k, options.get("scale"))
    bf16 = dtype == torch.bfloat16
    floors = ref.gradient_floors(q, k, v, dout, options.get("scale"))
    report = {}
    for name in got:
        if name == "out":
            tol = ref.forward_tolerance(d, n, s_max, bf16)
            err = ref.relative_error(got[name], want[name])
        else:
            tol = ref.backward_tolerance(d, n, s_max, bf16)
            err = ref.relative_error(got[name], want[name], floors[name])
        report[name] = (err, tol)
    case = (f"strategy={strategy} layout={layout} causal={causal} window={window} heads={hq}/{hkv} d={d} n={n} "
            f"b={b} {dtype} ranks={world_size} {options}")
    for name, (err, tol) in report.items():
        assert err <= tol, f"{case}: {name} error {err:.3g} > tolerance {tol:.3g}"
    return report
