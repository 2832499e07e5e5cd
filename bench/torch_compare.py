#!/usr/bin/python3
"""Burst's local kernel against Debian's PyTorch on the same machine, same threads.

PyTorch 1.13 has no fused attention on CPU (scaled_dot_product_attention arrived in 2.0), so
its baseline is what people write: S = scale Q K^T, softmax, S V, with the full score matrix in
memory. Burst runs through its Python op (strategy local). Both are timed forward-only
(torch.no_grad), median of --repeat runs after one warm-up, at the same thread count. torch's
own fp32 matmul at 4096^3 is printed too, to show what its BLAS reaches on this machine.

    /usr/bin/python3 bench/torch_compare.py [--seqlen 8192] [--heads 4] [--head-dim 128] [--threads 2]

Run from the repository root after `make build` (it reads build/python). FLOPs of a
non-causal forward: 4 b h s^2 d.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "python"))

import torch  # noqa: E402

import burst  # noqa: E402


def median_seconds(fn, repeat):
    fn()  # warm-up: page faults, thread pools, first-touch
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_attention(q, k, v, scale):
    # [b, s, h, d] -> [b, h, s, d]; the score matrix [b, h, s, s] is materialised.
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, vt).transpose(1, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seqlen", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    a = parser.parse_args()

    torch.set_num_threads(a.threads)
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    print(f"cpu: {model}; load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; threads {a.threads}")
    n = 4096
    x, y = torch.randn(n, n), torch.randn(n, n)
    sgemm = 2 * n**3 / median_seconds(lambda: torch.matmul(x, y), a.repeat) / 1e9
    print(f"torch fp32 matmul {n}^3: {sgemm:.0f} GFLOP/s ({a.threads} threads)")

    b, s, h, d = 1, a.seqlen, a.heads, a.head_dim
    flops = 4.0 * b * h * s * s * d
    scale = d ** -0.5
    print(f"{'dtype':9} {'torch s':>9} {'torch GFLOP/s':>14} {'burst s':>9} {'burst GFLOP/s':>14} {'burst/torch':>12} "
          f"{'max |diff|':>11}")
    for name in a.dtypes.split(","):
        dtype = getattr(torch, name)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, s, h, d, generator=g).to(dtype) for _ in range(3))
        with torch.no_grad():
            t_torch = median_seconds(lambda: torch_attention(q, k, v, scale), a.repeat)
            t_burst = median_seconds(lambda: burst.attention(q, k, v, strategy="local", threads=a.threads), a.repeat)
            diff = (burst.attention(q, k, v, strategy="local", threads=a.threads).float()
                    - torch_attention(q.double(), k.double(), v.double(), scale)).abs().max().item()
        print(f"{name:9} {t_torch:9.3f} {flops / t_torch / 1e9:14.1f} {t_burst:9.3f} {flops / t_burst / 1e9:14.1f} "
              f"{t_torch / t_burst:12.2f} {diff:11.2e}")


if __name__ == "__main__":
    main()
