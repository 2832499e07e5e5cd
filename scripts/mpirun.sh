#!/usr/bin/env bash
# mpirun with the flags this project needs: Open MPI refuses to run as root without the two
# ALLOW variables and more ranks than cores without --oversubscribe, and idle ranks must
# yield the core. MPICH's mpiexec needs none of these.
#   scripts/mpirun.sh -np 4 build/bin/test_comm_mpi
set -euo pipefail
launcher=$(command -v mpirun || command -v mpiexec)
if "$launcher" --version 2>&1 | grep -q "Open MPI"; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  exec "$launcher" --oversubscribe --mca mpi_yield_when_idle 1 --bind-to none "$@"
fi
exec "$launcher" "$@"
