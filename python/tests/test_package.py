"""The package as a user installs it: `pip install --no-build-isolation .` into a fresh venv
made with --system-site-packages (offline, Debian's setuptools, torch and mpi4py), then,
outside the source tree and without the build folder on PYTHONPATH: the installed package
imports with the C++ library's version and computes attention; the README's Python example
(examples/python/sequence_parallel.py, shown there verbatim) runs under torchrun with 2
processes; and the install wrote nothing into the source tree or the project's build/.
The build itself goes to BURST_PIP_BUILD_DIR (setup.py), reused by later runs.
Run: python3 -m pytest python/tests/test_package.py"""

import os
import re
import subprocess
import sys

import pytest

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(SOURCE, "examples", "python", "sequence_parallel.py")

SMOKE = """
import sys, torch, burst
assert burst.__file__.startswith(sys.prefix), burst.__file__
print(burst.__version__)
q = torch.randn(2, 33, 4, 16, generator=torch.Generator().manual_seed(0))
k, v = q[:, :, :2].clone(), q[:, :, 2:].clone()
out, lse = burst.attention(q, k, v, causal=True, return_lse=True)
s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double().repeat_interleave(2, 2)) / 4
s = s.masked_fill(torch.ones(33, 33, dtype=torch.bool).triu(1), float("-inf"))
want = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v.double().repeat_interleave(2, 2))
assert (out.double() - want).abs().max() < 1e-5 and (lse.double() - s.logsumexp(-1)).abs().max() < 1e-5
layer = burst.nn.AttentionLayer(32, 4, 2, sharding=burst.Sharding())
layer(torch.randn(1, 9, 32)).sum().backward()
assert "mpi4py" not in sys.modules
"""


def _project_version():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        return re.search(r"project\(burst VERSION (\d+\.\d+\.\d+)", f.read()).group(1)


def _setuptools_leftovers():
    """What a setuptools build leaves in the tree when it builds in place: egg-info folders
    and build/lib.*, build/temp.*, build/bdist.* (build/ is the project's CMake folder)."""
    folders = (SOURCE, os.path.join(SOURCE, "python"), os.path.join(SOURCE, "python", "burst"))
    found = [os.path.join(d, n) for d in folders for n in os.listdir(d) if n.endswith(".egg-info")]
    build = os.path.join(SOURCE, "build")
    if os.path.isdir(build):
        found += [os.path.join(build, n) for n in os.listdir(build) if n.startswith(("lib.", "temp.", "bdist."))]
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")], check=True)
    python = str(root / "venv" / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                              "--disable-pip-version-check", SOURCE], capture_output=True, text=True, env=env,
                             cwd=str(root))
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    assert _setuptools_leftovers() == [], "pip install wrote into the source tree or build/"
    return python, env, root


def test_installed_package_imports_and_computes(venv):
    python, env, root = venv
    run = subprocess.run([python, "-c", SMOKE], capture_output=True, text=True, env=env, cwd=str(root))
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.strip() == _project_version()


def test_readme_example_runs_under_torchrun(venv):
    python, env, root = venv
    with open(os.path.join(SOURCE, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Python\n", 1)[1].split("\n## ", 1)[0]
    with open(EXAMPLE) as f:
        assert f.read() in re.findall(r"```python\n(.*?)```", section, re.S), \
            "the README's Python section must show examples/python/sequence_parallel.py verbatim"
    env = dict(env, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    run = subprocess.run([python, os.path.join(SOURCE, "python", "tests", "torchrun.py"), "--nproc_per_node", "2",
                          EXAMPLE], capture_output=True, text=True, env=env, cwd=str(root), timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for rank in range(2):
        assert re.search(rf"rank {rank} of 2: 512 tokens, sent \d+ bytes forward", run.stdout + run.stderr), \
            run.stdout[-4000:] + run.stderr[-4000:]
