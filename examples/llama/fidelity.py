"""Does exact distributed attention leave a model untouched? A small LLaMA-architecture
byte-level model (model.py) trained on the English text of Debian's `fortunes` package,
then evaluated and trained again with its attention spread over MPI ranks by Burst.

    fidelity.py train --attention torch --out DIR       single process, plain torch attention
    mpirun -np P fidelity.py train --attention burst     sequence parallel over P ranks
    mpirun -np P fidelity.py eval --weights DIR/weights.pt   perplexity, every strategy/layout
    fidelity.py report DIR...                            table, largest loss difference, SVG plot

Sequence parallelism: every rank holds the tokens of its shard (burst.positions of the
layout), runs every token-wise layer on them alone and burst.attention across the ranks;
the loss is the sum over ranks of each shard's summed token losses divided by the global
token count, and weight gradients are summed over the ranks (reduced to rank 0 and broadcast,
so every rank applies bitwise the same update). run.sh runs the whole demonstration.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, TinyLlama, torch_causal_attention  # noqa: E402

import burst  # noqa: E402

CORPUS_DIR = "/usr/share/games/fortunes"
# Pictures drawn in characters, not English text.
NOT_PROSE = {"art", "ascii-art"}


def load_corpus(directory=CORPUS_DIR, held_out=0.1):
    """The fortune files' bytes in name order, split into training and held-out text (the
    last `held_out` fraction: whole files the training never sees)."""
    names = sorted(n for n in os.listdir(directory)
                   if not n.endswith((".dat", ".u8")) and n not in NOT_PROSE
                   and os.path.isfile(os.path.join(directory, n)))
    if not names:
        raise SystemExit(f"no corpus in {directory}: apt-get install fortunes (scripts/install-deps.sh)")
    text = b"".join(open(os.path.join(directory, n), "rb").read() for n in names)
    data = torch.tensor(np.frombuffer(text, dtype=np.uint8).astype(np.int64))
    split = int(len(data) * (1 - held_out))
    return data[:split], data[split:]


def world():
    """MPI.COMM_WORLD under an MPI launcher with more than one rank, else None."""
    if not any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD if MPI.COMM_WORLD.size > 1 else None


def rank_and_size(comm):
    return (0, 1) if comm is None else (comm.rank, comm.size)


def all_sum(comm, t):
    """Sum of t over the ranks, bitwise the same on every rank (reduce to 0, broadcast)."""
    if comm is None:
        return t
    from mpi4py import MPI

    src = t.detach().contiguous().numpy()
    out = np.empty_like(src)
    comm.Reduce(src, out, op=MPI.SUM, root=0)
    comm.Bcast(out, root=0)
    return torch.from_numpy(out)


def attention_fn(kind, comm, strategy, layout, seqlen, threads):
    if kind == "torch":
        if comm is not None:
            raise SystemExit("--attention torch runs on one process; use burst under mpirun")
        return torch_causal_attention
    return lambda q, k, v: burst.attention(q, k, v, causal=True, comm=comm, strategy=strategy, layout=layout,
                                           seqlen=seqlen, threads=threads)


def shard_window(window, comm, layout):
    """This rank's input tokens, target tokens and global positions of a [b, N + 1] window."""
    rank, size = rank_and_size(comm)
    n = window.shape[1] - 1
    pos = burst.positions(n, size, rank, layout)
    return window[:, :-1][:, pos], window[:, 1:][:, pos], pos


def local_nll(model, window, comm, attend, layout):
    """Summed token losses (float64 sum of fp32 terms) of this rank's shard of the window."""
    tokens, targets, pos = shard_window(window, comm, layout)
    logits = model(tokens, pos, attend)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return losses, losses.numel()


def config_from(args):
    return Config(dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
                  hidden=args.hidden)


def train_steps(model, data, comm, attend, layout, steps, batch, seqlen, lr, seed, log_every=0):
    """Trains model for `steps` AdamW steps on random windows of data (the same windows on
    every rank and in every run of one seed); returns the global loss of every step."""
    rank, _ = rank_and_size(comm)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    params = list(model.parameters())
    losses, started = [], time.time()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seqlen - 1, (batch,), generator=gen)
        window = torch.stack([data[s:s + seqlen + 1] for s in starts.tolist()])
        token_losses, _ = local_nll(model, window, comm, attend, layout)
        loss = token_losses.sum() / (batch * seqlen)
        opt.zero_grad()
        loss.backward()
        if comm is not None:
            flat = all_sum(comm, torch.cat([p.grad.reshape(-1) for p in params]))
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        total = all_sum(comm, loss.detach().double().reshape(1)).item()
        opt.step()
        losses.append(total)
        if rank == 0 and log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {total:.6f}  {time.time() - started:7.1f} s", flush=True)
    return losses


def train(args):
    comm = world()
    rank, size = rank_and_size(comm)
    torch.manual_seed(args.seed)
    model = TinyLlama(config_from(args))
    train_data, _ = load_corpus()
    attend = attention_fn(args.attention, comm, args.strategy, args.layout, args.seqlen, args.threads)
    started = time.time()
    losses = train_steps(model, train_data, comm, attend, args.layout, args.steps, args.batch, args.seqlen,
                         args.lr, args.seed, args.log_every)
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.out, "weights.pt"))
        record = {"attention": args.attention, "strategy": args.strategy, "layout": args.layout, "ranks": size,
                  "seqlen": args.seqlen, "batch": args.batch, "steps": args.steps, "lr": args.lr,
                  "seed": args.seed, "config": vars(config_from(args)), "seconds": time.time() - started,
                  "losses": losses}
        with open(os.path.join(args.out, "train.json"), "w") as f:
            json.dump(record, f)
    return losses


def perplexity(model, held_out, comm, attend, layout, seqlen, windows):
    """exp(mean token loss) over `windows` consecutive held-out windows of seqlen tokens."""
    total, count = torch.zeros(1, dtype=torch.float64), 0
    with torch.no_grad():
        for w in range(windows):
            window = held_out[w * seqlen: (w + 1) * seqlen + 1].unsqueeze(0)
            losses, _ = local_nll(model, window, comm, attend, layout)
            total += losses.double().sum()
            count += seqlen
    return math.exp(all_sum(comm, total).item() / count)


def evaluate(args):
    comm = world()
    rank, size = rank_and_size(comm)
    state = torch.load(args.weights)
    cfg_args = json.load(open(os.path.join(os.path.dirname(args.weights), "train.json")))["config"]
    model = TinyLlama(Config(**cfg_args))
    model.load_state_dict(state)
    _, held_out = load_corpus()
    if size == 1:
        runs = [("torch", "-", "contiguous"), ("burst", "burst", "contiguous")]
    else:
        runs = [("burst", s, layout) for s in args.strategies.split(",") for layout in burst.LAYOUTS]
    results = []
    for kind, strategy, layout in runs:
        attend = attention_fn(kind, comm, strategy, layout, args.seqlen, args.threads)
        started = time.time()
        ppl = perplexity(model, held_out, comm, attend, layout, args.seqlen, args.windows)
        row = {"ranks": size, "attention": kind, "strategy": strategy, "layout": layout, "perplexity": ppl,
               "tokens": args.seqlen * args.windows, "seqlen": args.seqlen, "seconds": time.time() - started}
        results.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
    if rank == 0 and args.results:
        with open(args.results, "a") as f:
            for row in results:
                f.write(json.dumps(row) + "\n")
    return results


def svg_plot(curves, path, title):
    """Writes the loss curves (name -> list of losses) and their differences from the first
    curve (log scale) as an SVG, with no plotting library."""
    width, height, pad = 760, 280, 60
    names = list(curves)
    steps = max(len(c) for c in curves.values())
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]

    def panel(y0, series, lo, hi, log, label):
        out = [f'<rect x="{pad}" y="{y0}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>',
               f'<text x="{pad}" y="{y0 - 8}" font-size="13">{label}</text>']
        # A zero difference has no logarithm: it is drawn on the panel's bottom edge.
        f = (lambda v: math.log10(max(v, lo))) if log else (lambda v: v)
        flo, fhi = f(lo), f(hi)
        for i, (name, ys) in enumerate(series.items()):
            pts = " ".join(f"{pad + (width - 2 * pad) * s / max(steps - 1, 1):.1f},"
                           f"{y0 + (height - 2 * pad) * (1 - (f(y) - flo) / max(fhi - flo, 1e-12)):.1f}"
                           for s, y in enumerate(ys))
            out.append(f'<polyline fill="none" stroke="{colors[i % len(colors)]}" stroke-width="1.2" points="{pts}"/>')
            out.append(f'<text x="{pad + 250}" y="{y0 + 16 + 15 * i}" font-size="12" '
                       f'fill="{colors[i % len(colors)]}">{name}</text>')
        for frac in (0, 0.5, 1):
            v = flo + (fhi - flo) * frac
            text = f"{10 ** v:.1e}" if log else f"{v:.3g}"
            out.append(f'<text x="4" y="{y0 + (height - 2 * pad) * (1 - frac) + 4:.1f}" font-size="11">{text}</text>')
        out.append(f'<text x="{width / 2 - 20}" y="{y0 + height - 2 * pad + 18}" font-size="11">step (0..{steps - 1})</text>')
        return out

    base = curves[names[0]]
    diffs = {f"|{n} - {names[0]}|": [abs(a - b) for a, b in zip(curves[n], base)] for n in names[1:]}
    all_losses = [y for c in curves.values() for y in c]
    all_diffs = [y for c in diffs.values() for y in c if y > 0] or [1e-12]
    body = [f'<text x="{pad}" y="22" font-size="15">{title}</text>']
    body += panel(50, curves, min(all_losses), max(all_losses), False,
                  "training loss (nats per byte); the curves lie on top of each other")
    body += panel(50 + height, diffs, min(all_diffs), max(all_diffs), True,
                  f"|loss - loss of {names[0]}| (log scale; 0 on the bottom edge)")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * height - 40}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>')
    with open(path, "w") as f:
        f.write(svg)


def report(args):
    runs = [json.load(open(os.path.join(d, "train.json"))) for d in args.runs]
    curves = {}
    for r in runs:
        name = "single process, torch attention" if r["attention"] == "torch" else \
            f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''}, {r['strategy']} {r['layout']}"
        if r.get("data_parallel", 1) > 1:  # torchrun_train.py's data x sequence grid
            name += f" ({r['data_parallel']} data x {r['sequence_parallel']} sequence)"
        curves[name] = r["losses"]
    names = list(curves)
    base = curves[names[0]]
    print("| run | final loss | largest abs difference | largest rel difference | seconds |")
    print("|---|---|---|---|---|")
    for r, name in zip(runs, names):
        d = [abs(a - b) for a, b in zip(curves[name], base)]
        rel = [abs(a - b) / abs(b) for a, b in zip(curves[name], base)]
        print(f"| {name} | {curves[name][-1]:.6f} | {max(d):.3g} (step {d.index(max(d))}) | {max(rel):.3g} | "
              f"{r['seconds']:.0f} |")
    if args.plot:
        svg_plot(curves, args.plot, f"Sequence-parallel training with Burst vs one process "
                                    f"({runs[0]['steps']} steps, {runs[0]['seqlen']} tokens)")
        print(f"plot: {args.plot}")
    if args.eval:
        rows = [json.loads(line) for line in open(args.eval)]
        ref = next(r["perplexity"] for r in rows if r["attention"] == "torch")
        print("\n| ranks | attention | strategy | layout | perplexity | rel. difference from torch |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['ranks']} | {r['attention']} | {r['strategy']} | {r['layout']} | {r['perplexity']:.6f} | "
                  f"{abs(r['perplexity'] - ref) / ref:.2e} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("train", "eval"):
        s = sub.add_parser(name)
        s.add_argument("--seqlen", type=int, default=4096)
        s.add_argument("--threads", type=int, default=1, help="Burst kernel threads per rank")
    t = sub.choices["train"]
    t.add_argument("--out", default="out/fidelity/run", help="folder for train.json and weights.pt")
    t.add_argument("--attention", choices=["torch", "burst"], default="burst")
    t.add_argument("--strategy", default="burst")
    t.add_argument("--layout", default="zigzag")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--dim", type=int, default=64)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--heads", type=int, default=8)
    t.add_argument("--kv-heads", type=int, default=4)
    t.add_argument("--hidden", type=int, default=176)
    e = sub.choices["eval"]
    e.add_argument("--weights", required=True)
    e.add_argument("--windows", type=int, default=4, help="held-out windows of seqlen tokens")
    e.add_argument("--strategies", default="burst,ring,ulysses,allgather")
    e.add_argument("--results", help="append the rows to this file (JSON lines)")
    r = sub.add_parser("report")
    r.add_argument("runs", nargs="+", help="training output folders, the single-process one first")
    r.add_argument("--eval", help="the eval results file (JSON lines)")
    r.add_argument("--plot", help="SVG file for the loss curves")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    {"train": train, "eval": evaluate, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
