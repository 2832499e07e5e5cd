#!/usr/bin/env bash
# Installs every Debian package Burst needs to build, test and benchmark. Idempotent: when all
# packages are present it only runs dpkg-query and exits in well under a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libopenblas0-pthread libopenblas-pthread-dev   # GEMM tiles (loaded at run time, see docs/blas.md)
  googletest libgtest-dev libbenchmark-dev        # tests and benchmarks
  python3 python3-numpy                           # .npy round-trip checks in the CLI tests
  libopenmpi-dev openmpi-bin                      # the MPI communicator backend and mpirun
  python3-dev pybind11-dev                        # the Python module (python/)
  python3-torch python3-mpi4py python3-pytest     # its autograd op, MPI communicators, tests
  python3-pip python3-venv python3-setuptools python3-wheel  # pip install . (setup.py) and its venv test
  fortunes                                        # English text for examples/llama and its test
  iproute2 util-linux procps                      # multihost stage: namespaces, links (ip), shaping (tc), ps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
