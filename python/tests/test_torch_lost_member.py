"""A torch.distributed group that loses a member: torchrun jobs (torch_lost_member.py) in
which the last rank's process ends before or during an attention call; every other rank must
raise burst.CommError naming it, well within the deadline (a lost peer closes its
connections, which gloo reports at once). One process; it starts the jobs.
Run: PYTHONPATH=build/python python3 -m pytest python/tests/test_torch_lost_member.py"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20.0


@pytest.mark.parametrize("ranks,when", [(2, "before"), (4, "during")])
def test_lost_member_fails_every_rank_naming_it(ranks, when, tmp_path):
    job = subprocess.run([sys.executable, os.path.join(HERE, "torchrun.py"), "--nproc_per_node", str(ranks),
                          os.path.join(HERE, "torch_lost_member.py"), str(tmp_path), when, str(TIMEOUT)],
                         capture_output=True, text=True, timeout=120)
    log = job.stdout[-3000:] + job.stderr[-3000:]
    assert job.returncode == 0, log
    lost = ranks - 1
    for rank in range(lost):
        path = tmp_path / f"rank{rank}.json"
        assert path.exists(), f"rank {rank} wrote no result\n{log}"
        record = json.loads(path.read_text())
        assert record["error"] is not None, f"rank {rank} raised nothing"
        assert record["comm_error"], f"rank {rank}: {record['type']}: {record['error']}"
        assert f"rank {lost}" in record["error"], f"rank {rank} does not name rank {lost}: {record['error']}"
        assert record["seconds"] < TIMEOUT, f"rank {rank} failed after {record['seconds']:.1f} s"
