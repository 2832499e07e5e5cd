"""A torchrun job in which the last rank is lost: its process ends (before the call, or in the
middle of it) and every other rank must fail with burst.CommError naming it within the
deadline. Each surviving rank writes what it saw to OUT/rank<R>.json for
test_torch_lost_member.py to check.
    torchrun --nproc_per_node P torch_lost_member.py OUT before|during TIMEOUT"""

import json
import os
import sys
import threading
import time

import torch
import torch.distributed as dist

import burst

out_dir, when, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
dist.init_process_group("gloo")
rank, size = dist.get_rank(), dist.get_world_size()
sharding = burst.Sharding(burst.Communicator(group=dist.group.WORLD, timeout=timeout))
# Long enough that the lost rank is mid-ring when it goes (during), small enough for 2 cores.
n = 1024 * size if when == "during" else 4 * size
x = torch.randn(1, n, 4, 64, generator=torch.Generator().manual_seed(0))
q = sharding.shard(x)
burst.attention(q, q, q, causal=True, sharding=sharding)  # every rank takes part once
dist.barrier()

if rank == size - 1:
    if when == "during":
        threading.Thread(target=burst.attention, args=(q, q, q),
                         kwargs=dict(causal=True, sharding=sharding, seqlen=n), daemon=True).start()
        time.sleep(0.1)
    os._exit(0)  # lost: the process ends and its connections close

started = time.monotonic()
record = {"rank": rank, "size": size, "timeout": timeout}
try:
    for _ in range(3):  # more than one call: the loss may surface in any of them
        burst.attention(q, q, q, causal=True, sharding=sharding, seqlen=n)
    record["error"] = None
except Exception as e:  # noqa: BLE001 - the test checks the type
    record.update(error=str(e), type=type(e).__name__, comm_error=isinstance(e, burst.CommError))
record["seconds"] = time.monotonic() - started
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(record, f)
