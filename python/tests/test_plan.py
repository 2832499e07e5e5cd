"""burst.plan: the library's cost model from Python, against the command's figures."""

import json
import os
import subprocess

import pytest

import burst

BURST = os.path.join(os.path.dirname(burst.__file__), "..", "..", "bin", "burst")


def test_plan_matches_the_command(tmp_path):
    rows = burst.plan([32768, 65536], cluster="8xA100-PCIe", model="llama2-7b", backward=False)
    assert [r["seqlen"] for r in rows] == [32768, 65536]
    names = [s["strategy"] for s in rows[0]["strategies"]]
    assert names[:3] == ["burst", "burst-double", "ring"] and "tp-v3" in names
    if not os.path.exists(BURST):
        pytest.skip("no burst command next to the module")
    path = tmp_path / "plan.json"
    subprocess.run([BURST, "plan", "--cluster", "8xA100-PCIe", "--forward-only", "--seqlen", "32K,64K", "--json",
                    str(path)], check=True, capture_output=True)
    data = json.loads(path.read_text())
    for row, want in zip(rows, data["results"]):
        assert row["recommended"] == want["recommended"]
        for got, exp in zip(row["strategies"], want["strategies"]):
            assert got["strategy"] == exp["strategy"]
            assert got["out_of_memory"] == exp["out_of_memory"]
            assert got["seconds"] == pytest.approx(exp["seconds"] or 0, rel=1e-8)


def test_plan_takes_a_layout_in_the_strategy_name():
    rows = burst.plan(262144, cluster="8xA100-PCIe", backward=False,
                      strategies=["burst", "burst@striped", "burst@contiguous"])
    zigzag, striped, contiguous = (s["seconds"] for s in rows[0]["strategies"])
    assert [s["strategy"] for s in rows[0]["strategies"]] == ["burst", "burst@striped", "burst@contiguous"]
    assert striped == pytest.approx(zigzag, rel=0.01) and contiguous > 1.5 * zigzag
    with pytest.raises(ValueError, match="^strategies: 'ulysses@striped'"):
        burst.plan(4096, strategies=["ulysses@striped"])


def test_plan_takes_a_window_as_the_command_does(tmp_path):
    # A causal window of 4K keys at 256K: the contiguous layout's shards stop after one hop,
    # so it beats zigzag, as `burst plan --window` says too.
    names = ["burst", "burst@contiguous"]
    rows = burst.plan(262144, cluster="8xA100-PCIe", backward=False, strategies=names, window_size=(4095, 0))
    zigzag, contiguous = rows[0]["strategies"]
    assert contiguous["seconds"] < zigzag["seconds"]
    assert contiguous["forward_bytes_per_rank"] < zigzag["forward_bytes_per_rank"]
    unwindowed = burst.plan(262144, cluster="8xA100-PCIe", backward=False, strategies=names)
    assert zigzag["seconds"] < unwindowed[0]["strategies"][0]["seconds"]
    with pytest.raises(ValueError, match="^window_size: expected a \\(left, right\\) pair"):
        burst.plan(4096, window_size=(5,))
    with pytest.raises(ValueError, match="^strategies: burst@striped: without a mask"):
        burst.plan(4096, causal=False, strategies=["burst@striped"])
    if not os.path.exists(BURST):
        pytest.skip("no burst command next to the module")
    path = tmp_path / "plan.json"
    subprocess.run([BURST, "plan", "--cluster", "8xA100-PCIe", "--forward-only", "--seqlen", "256K", "--window",
                    "4095,0", "--strategy", ",".join(names), "--json", str(path)], check=True, capture_output=True)
    want = json.loads(path.read_text())["results"][0]["strategies"]
    for got, exp in zip(rows[0]["strategies"], want):
        assert got["strategy"] == exp["strategy"]
        assert got["seconds"] == pytest.approx(exp["seconds"], rel=1e-8)
        assert got["forward_bytes_per_rank"] == exp["forward_bytes_per_rank"]


def test_plan_errors_name_the_argument():
    with pytest.raises(ValueError, match="^scope: expected core, layer or model"):
        burst.plan(4096, scope="all")
    with pytest.raises(ValueError, match="^strategies: expected burst"):
        burst.plan(4096, strategies=["fast"])
    with pytest.raises(ValueError, match="^ranks: expected a multiple of the 2 nodes"):
        burst.plan(4096, ranks=3, nodes=2)
    with pytest.raises(ValueError, match="^cluster: "):
        burst.plan(4096, cluster="9xH100")
    assert "8xA100-PCIe" in burst.plan_clusters() and "llama2-13b" in burst.plan_models()
