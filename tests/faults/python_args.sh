#!/usr/bin/env bash
# Python arguments checked before they reach C++ (issue 13): a size-0 dimension, an integer
# past what the C++ side takes (a window of 2**70), a float where a count belongs, a timeout
# that would overflow the deadline clock: each a ValueError (TypeError for a wrong type)
# naming the argument, the expected and the actual value, never pybind11's "incompatible
# function arguments", a null-pointer message or a silent truncation.
source "$(dirname "$0")/lib.sh" "$@"

if ! "$PYTHON" -c 'import torch, burst' 2>/dev/null; then
  skip "python arguments" "$PYTHON cannot import torch and burst (PYTHONPATH=${PYTHONPATH:-})"
  finish
  exit
fi

# One line per case: "ok NAME" or "FAIL NAME: what happened".
results=$("$PYTHON" - <<'PY' 2>&1
import torch
import burst

g = torch.Generator().manual_seed(13)
def rand(*shape):
    return torch.randn(*shape, generator=g)

q, k, v = rand(1, 8, 2, 16), rand(1, 8, 2, 16), rand(1, 8, 2, 16)
big = 2**70

def case(name, error, needles, call):
    try:
        call()
    except error as e:
        missing = [n for n in needles if n not in str(e)]
        print(f"FAIL {name}: message lacks {missing}: {' '.join(str(e).split())[:200]}" if missing else f"ok {name}")
    except Exception as e:
        print(f"FAIL {name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    else:
        print(f"FAIL {name}: no error")

for dim, label in enumerate("bshd"):
    shape = [1, 8, 2, 16]
    shape[dim] = 0
    empty = rand(*shape)
    case(f"q with {label} = 0", ValueError, ["q: expected", f"got shape {shape}"], lambda: burst.attention(empty, k, v))
case("k with s = 0", ValueError, ["k: expected", "[1, 0, 2, 16]"], lambda: burst.attention(q, rand(1, 0, 2, 16), v))
case("v with d = 0", ValueError, ["v: expected", "[1, 8, 2, 0]"], lambda: burst.attention(q, k, rand(1, 8, 2, 0)))

case("window 2**70", ValueError, ["window: expected", str(big)], lambda: burst.attention(q, k, v, window=big))
case("window (2**70, 1)", ValueError, ["window: expected", str(big)], lambda: burst.attention(q, k, v, window=(big, 1)))
case("window side -5", ValueError, ["window: expected", "-1 (unbounded)", "(-5, 1)"], lambda: burst.attention(q, k, v, window=(-5, 1)))
case("window side 1.5", ValueError, ["window: expected", "(1.5, 1)"], lambda: burst.attention(q, k, v, window=(1.5, 1)))
case("threads 2**40", ValueError, ["threads: expected 1 to ", str(2**40)],
     lambda: burst.attention(q, k, v, threads=2**40))
case("threads 1.5", TypeError, ["threads: expected", "1.5"], lambda: burst.attention(q, k, v, threads=1.5))
case("ulysses_degree 2**40", ValueError, ["ulysses_degree: expected", str(2**40)],
     lambda: burst.attention(q, k, v, strategy="usp", ulysses_degree=2**40))
case("seqlen 2**70", ValueError, ["seqlen: expected", str(big)], lambda: burst.attention(q, k, v, seqlen=big))
case("seqlen 2**40", ValueError, ["seqlen: expected", str(2**40)], lambda: burst.attention(q, k, v, seqlen=2**40))
case("scale 2**1100", ValueError, ["scale: expected", "finite"], lambda: burst.attention(q, k, v, scale=2**1100))
case("causal 'no'", TypeError, ["causal: expected", "'no'"], lambda: burst.attention(q, k, v, causal="no"))
case("strategy 3", TypeError, ["strategy: expected", "3"], lambda: burst.attention(q, k, v, strategy=3))
case("timeout 2**70", ValueError, ["timeout: expected", "1e+09", "1.18059e+21"], lambda: burst.Communicator(timeout=big))
case("timeout 1e-9", ValueError, ["timeout: expected", "0.001", "1e-09"], lambda: burst.Communicator(timeout=1e-9))
case("timeout '5'", TypeError, ["timeout: expected", "'5'"], lambda: burst.Communicator(timeout="5"))
case("positions seqlen 2**70", ValueError, ["seqlen: expected", str(big)], lambda: burst.positions(big, 1, 0))
case("positions world_size 2**40", ValueError, ["world_size: expected", str(2**40)], lambda: burst.positions(8, 2**40, 0))
case("positions rank 2**70", ValueError, ["rank: expected", "0 to 1", str(big)], lambda: burst.positions(8, 2, big))
case("shard rank 2**70", ValueError, ["rank: expected", str(big)], lambda: burst.shard(q, 2, big))
case("shard dim 7", ValueError, ["dim: expected", "-4 to 3", "got 7"], lambda: burst.shard(q, 2, 0, dim=7))
case("shard of 0 tokens", ValueError, ["x: expected", "[1, 0, 2, 16]"], lambda: burst.shard(rand(1, 0, 2, 16), 2, 0))
case("unshard dim 5", ValueError, ["dim: expected", "got 5"], lambda: burst.unshard([q, k], dim=5))
case("gather dim 9", ValueError, ["dim: expected", "got 9"], lambda: burst.gather(q, None, dim=9))

# The checks take what they should: numpy and torch integers, -1 for an unbounded side,
# a timeout in range; the result is the plain call's, bit for bit.
import numpy as np
try:
    want = burst.attention(q, k, v, window=(3, -1), threads=2, scale=0.3)
    got = burst.attention(q, k, v, window=(np.int64(3), torch.tensor(-1)), threads=np.int32(2), scale=np.float64(0.3),
                          seqlen=torch.tensor(8), causal=np.bool_(False))
    c = burst.Communicator(timeout=2**5)
    ok = torch.equal(want, got) and c.timeout == 32 and not torch.isnan(want).any()
    print("ok integer scalars accepted" if ok else "FAIL integer scalars accepted: results differ")
except Exception as e:
    print(f"FAIL integer scalars accepted: {type(e).__name__}: {e}")
PY
)
count_lines "$results"

finish
