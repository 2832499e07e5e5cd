"""burst.plan: the library's cost model (burst/plan.h; `burst plan` on the command line,
docs/plan.md) for cluster and model presets."""

from . import _burst
from ._layout import window_sides


def plan(seqlens, cluster="8xA100-PCIe", model="llama2-7b", *, ranks=None, nodes=None, batch=1, causal=True,
         backward=True, scope="model", dtype="bf16", strategies=None, window_size=None):
    """Predicts, per rank, the time, the bytes sent and the memory of every strategy and
    recommends one, as `burst plan` does.

    seqlens: a sequence length or a list of them (tokens). cluster: a preset of
    burst.plan_clusters(); model: one of burst.plan_models(); ranks and nodes override the
    cluster's; scope: "core" (the attention core), "layer" (one attention layer) or "model"
    (every layer, with projections and MLP); backward=False predicts the forward alone
    (first-token latency). Returns one dict per length: {"seqlen", "recommended",
    "strategies": [one dict per strategy, named as `burst plan --json` names them]}.
    strategies: only these, named as `burst plan --strategy` names them ("usp:4" for a
    Ulysses degree, "burst@contiguous" for a layout under a mask).
    window_size: a sliding window (left, right) as burst.attention takes it: query q sees
    keys in [q - left, q + right], -1 for an unbounded side. With causal=True,
    window_size=(4095, 0) is a causal window of 4096 keys (`burst plan --window 4095,0`).
    Bad arguments raise ValueError naming the argument.
    """
    if isinstance(seqlens, int):
        seqlens = [seqlens]
    left, right = window_sides(window_size)
    return _burst.plan([int(s) for s in seqlens], cluster, model, ranks, nodes, batch, causal, backward, scope, dtype,
                       None if strategies is None else [str(s) for s in strategies], left, right)


def plan_clusters():
    """The cluster presets burst.plan knows."""
    return _burst.plan_clusters()


def plan_models():
    """The model presets burst.plan knows."""
    return _burst.plan_models()
