"""Sequence-parallel training of the LLaMA-style model (model.py) under torchrun over gloo,
with data parallelism on a second dimension of the process grid: P = D data x S sequence
ranks (e.g. 4 = 2 x 2). No MPI.

    python3 -m torch.distributed.run --nproc_per_node 4 --redirects 2 --tee 2 \\
        examples/llama/torchrun_train.py --data-parallel 2 --out out/torchrun/p4
    python3 examples/llama/torchrun_train.py --out out/torchrun/p1      # one process: the reference
    python3 examples/llama/fidelity.py report out/torchrun/p1 out/torchrun/p4

Rank r is sequence rank r % S of data replica r // S. Every step draws the same batch of B
windows on every rank; replica d trains on windows [d B/D, (d+1) B/D), each sharded over its
sequence group by a burst.Sharding (zigzag): token-wise layers run on the shard alone,
burst.nn.BurstAttention spans the sequence group, rotary embeddings use global positions.
Each rank's loss is its shard's summed token losses over the global token count B N, so the
sum over all ranks is the one-process loss. Gradients are all-reduced through
torch.distributed: over the sequence group, then over the data group; every rank then holds
the same sum and applies the same AdamW update (checked at the end: the ranks' weights are
bitwise equal)."""

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fidelity import load_corpus  # noqa: E402
from model import Config, TinyLlama  # noqa: E402

import burst  # noqa: E402


class Mesh:
    """This process's place in a D x S grid of ranks and its groups: the sequence group (the
    S ranks of its replica, which Burst's attention spans) and the data group (the D ranks
    holding the same sequence shard in every replica). One process: a 1 x 1 mesh, no groups."""

    def __init__(self, data_parallel, single=False):
        if not single and not dist.is_initialized() and "WORLD_SIZE" in os.environ:  # started by torchrun
            dist.init_process_group("gloo")
        spread = not single and dist.is_initialized()
        world = dist.get_world_size() if spread else 1
        rank = dist.get_rank() if spread else 0
        if data_parallel < 1 or world % data_parallel != 0:
            raise SystemExit(f"--data-parallel: expected a divisor of the {world} ranks, got {data_parallel}")
        self.data, self.sequence = data_parallel, world // data_parallel
        self.rank, self.world = rank, world
        self.replica, self.sequence_rank = rank // self.sequence, rank % self.sequence
        self.sequence_group = self.data_group = None
        if world > 1:
            # Every rank makes every group, in one order (torch.distributed.new_group's rule).
            for d in range(self.data):
                g = dist.new_group(list(range(d * self.sequence, (d + 1) * self.sequence)))
                if d == self.replica:
                    self.sequence_group = g
            for s in range(self.sequence):
                g = dist.new_group(list(range(s, world, self.sequence)))
                if s == self.sequence_rank:
                    self.data_group = g

    @classmethod
    def single(cls):
        """This process alone, even inside a torchrun job (the reference run)."""
        return cls(1, single=True)

    def all_reduce(self, t):
        """Sum of t over every rank: over the sequence group, then over the data group."""
        for group, size in ((self.sequence_group, self.sequence), (self.data_group, self.data)):
            if size > 1:
                dist.all_reduce(t, group=group)
        return t


def train_steps(model, data, mesh, sharding, steps, batch, seqlen, lr, seed, strategy="burst", log_every=0):
    """Trains `steps` AdamW steps on random windows of data; returns the global loss of every
    step and the attention module (its communicator has the bytes of the latest call)."""
    if batch % mesh.data != 0:
        raise SystemExit(f"--batch: expected a multiple of the {mesh.data} data-parallel replicas, got {batch}")
    attention = burst.nn.BurstAttention(sharding=sharding, causal=True, strategy=strategy)
    positions = sharding.positions(seqlen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    params = list(model.parameters())
    per_replica = batch // mesh.data
    losses, started = [], time.time()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seqlen - 1, (batch,), generator=gen).tolist()
        mine = starts[mesh.replica * per_replica:(mesh.replica + 1) * per_replica]
        window = torch.stack([data[s:s + seqlen + 1] for s in mine])
        tokens, targets = window[:, :-1][:, positions], window[:, 1:][:, positions]
        logits = model(tokens, positions, attention)
        token_losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        loss = token_losses.sum() / (batch * seqlen)
        opt.zero_grad()
        loss.backward()
        flat = mesh.all_reduce(torch.cat([p.grad.reshape(-1) for p in params]))
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        total = mesh.all_reduce(loss.detach().double().reshape(1)).item()
        opt.step()
        losses.append(total)
        if mesh.rank == 0 and log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {total:.6f}  {time.time() - started:7.1f} s", flush=True)
    return losses, attention


def weights_agree(model, mesh):
    """True when every rank holds bitwise the same weights."""
    if mesh.world == 1:
        return True
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    every = [torch.empty_like(flat) for _ in range(mesh.world)]
    dist.all_gather(every, flat)
    return all(torch.equal(flat, other) for other in every)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-parallel", type=int, default=1, help="D: data-parallel replicas (divides the ranks)")
    p.add_argument("--out", default="out/torchrun/run", help="folder for train.json (fidelity.py report reads it)")
    p.add_argument("--strategy", default="burst")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=2, help="windows per step, over all replicas")
    p.add_argument("--seqlen", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    mesh = Mesh(args.data_parallel)
    sharding = burst.Sharding(mesh.sequence_group)
    torch.manual_seed(args.seed)
    cfg = Config(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, hidden=176)
    model = TinyLlama(cfg)
    train_data, _ = load_corpus()
    started = time.time()
    losses, attention = train_steps(model, train_data, mesh, sharding, args.steps, args.batch, args.seqlen, args.lr,
                                    args.seed, args.strategy, args.log_every)
    stats = sharding.communicator.last_stats
    same = weights_agree(model, mesh)
    # The bytes of one attention call (every layer's is alike) by the formula, from this rank's shapes.
    n_local = len(sharding.positions(args.seqlen))
    q = torch.empty(args.batch // mesh.data, n_local, cfg.n_heads, cfg.head_dim)
    kv = torch.empty(args.batch // mesh.data, n_local, cfg.n_kv_heads, cfg.head_dim)
    formula = burst.expected_bytes(q, kv, kv, causal=True, sharding=sharding, seqlen=args.seqlen,
                                   strategy=args.strategy)
    sent = {"forward": stats["forward"]["bytes_sent"] + stats["forward"]["bytes_saved"],
            "backward": stats["backward"]["bytes_sent"]} if stats else {"forward": 0, "backward": 0}
    print(f"rank {mesh.rank}: replica {mesh.replica} of {mesh.data}, sequence rank {mesh.sequence_rank} of "
          f"{mesh.sequence}, {n_local} tokens; bytes per attention call forward {sent['forward']} (formula "
          f"{formula['forward']}), backward {sent['backward']} (formula {formula['backward']}); "
          f"weights equal on every rank: {same}", flush=True)
    if mesh.rank == 0:
        os.makedirs(args.out, exist_ok=True)
        record = {"attention": "burst", "strategy": args.strategy, "layout": sharding.layout, "ranks": mesh.world,
                  "data_parallel": mesh.data, "sequence_parallel": mesh.sequence, "seqlen": args.seqlen,
                  "batch": args.batch, "steps": args.steps, "lr": args.lr, "seed": args.seed, "config": vars(cfg),
                  "seconds": time.time() - started, "losses": losses,
                  "bytes_per_call": sent, "bytes_formula": formula, "weights_equal": same}
        with open(os.path.join(args.out, "train.json"), "w") as f:
            json.dump(record, f)
    if sent != formula or not same:
        raise SystemExit(f"rank {mesh.rank}: bytes {sent} vs formula {formula}, weights equal {same}")


if __name__ == "__main__":
    main()
