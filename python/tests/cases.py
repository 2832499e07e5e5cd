"""One attention case end to end, on whatever ranks `comm` spans (None, an mpi4py
communicator, a torch.distributed group or a burst.Communicator): global random tensors (the
same on every rank, from the seed), this rank's shards through a burst.Sharding, attention
with its lse and backward, the results gathered and compared with the float64 torch
reference of the whole problem under the written tolerances, and the bytes this rank sent
against the strategy's formula (burst.expected_bytes: the library's table). Every rank checks the gathered
results, so a failure fails on all ranks alike and no rank is left waiting."""

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


def check_case(comm=None, strategy="burst", layout="zigzag", causal=False, window=None, hq=4, hkv=2, d=16, n=37,
               b=2, dtype=torch.float32, seed=1, cu_seqlens=None, **options):
    """Runs one case and asserts its forward, lse and gradient errors are within the
    tolerances and its bytes equal the formula's; returns the errors and tolerances.
    cu_seqlens: packed documents, held by the sharding (which doc-zigzag and balanced place
    tokens by, with causal and the window)."""
    window_size = (window, window) if isinstance(window, int) else window
    sharding = burst.Sharding(comm, layout, cu_seqlens=cu_seqlens, causal=causal, window_size=window_size)
    world_size = sharding.world_size
    q, k, v, dout = random_inputs(b, n, hq, hkv, d, dtype, seed)
    shards = [sharding.shard(t).requires_grad_() for t in (q, k, v)]
    out, lse = burst.attention(*shards, causal=causal, window=window, strategy=strategy, sharding=sharding,
                               return_lse=True, **options)
    assert out.dtype == dtype and out.shape == shards[0].shape
    assert lse.dtype == torch.float32 and lse.shape == (b, hq, shards[0].shape[1])
    out.backward(sharding.shard(dout))
    for s in shards:
        assert s.grad.dtype == dtype and s.grad.shape == s.shape
    stats = sharding.communicator.last_stats

    got = {name: sharding.gather(t) for name, t in
           (("out", out), ("dq", shards[0].grad), ("dk", shards[1].grad), ("dv", shards[2].grad))}
    got_lse = sharding.gather(lse, dim=2)

    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    documents = None if cu_seqlens is None else [int(c) for c in cu_seqlens]
    expected = ref.attention(*leaves, causal=causal, window=window, scale=options.get("scale"), documents=documents)
    expected.backward(dout.double())
    want = {"out": expected.detach(), "dq": leaves[0].grad, "dk": leaves[1].grad, "dv": leaves[2].grad}
    want_lse = ref.lse(q, k, causal=causal, window=window, scale=options.get("scale"), documents=documents)

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
    lse_max = want_lse[torch.isfinite(want_lse)].abs().max().item()
    report["lse"] = (ref.lse_error(got_lse, want_lse), ref.lse_tolerance(d, n, s_max, lse_max))
    case = (f"strategy={strategy} layout={layout} causal={causal} window={window} heads={hq}/{hkv} d={d} n={n} "
            f"b={b} {dtype} ranks={world_size} {options}" + ("" if documents is None else f" cu_seqlens={documents}"))
    for name, (err, tol) in report.items():
        assert err <= tol, f"{case}: {name} error {err:.3g} > tolerance {tol:.3g}"

    formula = burst.expected_bytes(*shards, causal=causal, window=window, strategy=strategy, sharding=sharding,
                                   seqlen=n, **options)
    sent = {"forward": stats["forward"]["bytes_sent"] + stats["forward"]["bytes_saved"],
            "backward": stats["backward"]["bytes_sent"] + stats["backward"]["bytes_saved"]}
    for phase in ("forward", "backward"):
        assert sent[phase] == formula[phase], \
            f"{case}: rank {sharding.rank} sent {sent[phase]} bytes in the {phase}, the formula says {formula[phase]}"
    report["bytes"] = sent
    return report
