"""The ranks a call spans: burst.Communicator, and what `group=` / `comm=` accept.

A communicator is made from one of
- None: this process alone;
- a torch.distributed ProcessGroup (gloo; torchrun + init_process_group, no MPI);
- an mpi4py communicator (mpirun; mpi4py is imported only when one is passed).
Making one from a group or an mpi4py communicator is collective over it.
"""

import atexit
import os

import torch

from . import _burst
from ._layout import real_argument

_KINDS = "None, a torch.distributed ProcessGroup, an mpi4py communicator or a burst.Communicator"


def _process_group_type():
    """torch.distributed.ProcessGroup, or None when torch has no distributed support."""
    if not torch.distributed.is_available():
        return None
    return torch.distributed.ProcessGroup


def _is_process_group(obj):
    group_type = _process_group_type()
    return group_type is not None and isinstance(obj, group_type)


def _is_mpi4py(obj):
    return type(obj).__module__.split(".")[0] == "mpi4py"


def _global_ranks(group):
    """The default group's rank of every rank of `group`, for error messages."""
    dist = torch.distributed
    size = group.size()
    if not dist.is_initialized() or group is dist.distributed_c10d._get_default_group():
        return list(range(size))
    try:
        return [dist.get_global_rank(group, r) for r in range(size)]
    except (RuntimeError, ValueError):  # a group torch.distributed did not make
        return list(range(size))


class Communicator:
    """The ranks an attention call spans: this process alone (None), the processes of a
    torch.distributed ProcessGroup, or those of an mpi4py communicator. Making one from a
    group or an mpi4py communicator is collective over it: the ranks exchange their host
    names (an mpi4py communicator is also duplicated, so Burst's messages never meet the
    caller's; over a group Burst uses tags from 2^30 up). timeout: seconds every wait may take
    (default BURST_TIMEOUT, else 60); a rank that waits longer raises burst.CommTimeoutError.

    Over a torch.distributed group a failed transfer (a lost peer, a deadline) closes the
    group: gloo cannot withdraw a posted transfer, and closing makes the peers fail at once
    instead of at their deadline. The error names the transfer, the peer and every rank whose
    connection had closed; the job should then end (torchrun stops or restarts it)."""

    def __init__(self, comm=None, timeout=None, *, group=None):
        if comm is not None and group is not None:
            raise ValueError(f"comm and group: expected one of them, got comm={comm!r} and group={group!r}")
        source = group if group is not None else comm
        self.mpi = None  # the mpi4py communicator, if made from one
        self.group = None  # the torch.distributed group, if made from one
        self.last_stats = {}  # "forward", "backward": what the latest call on this rank did
        if source is None:
            self._impl = _burst.Communicator.single()
        elif isinstance(source, Communicator):
            raise TypeError("comm: already a burst.Communicator; pass it to attention() or Sharding() as it is")
        elif _is_process_group(source):
            if torch.distributed.get_backend(source) == "nccl":
                raise ValueError("group: expected a group whose backend moves CPU tensors (gloo), got an nccl "
                                 "group; make one with torch.distributed.new_group(backend='gloo')")
            self.group = source
            self._impl = _burst.Communicator.from_process_group(source, _global_ranks(source))
        elif _is_mpi4py(source):
            self.mpi = source
            self._impl = _burst.Communicator.from_mpi4py(source)
        else:
            raise TypeError(f"comm: expected {_KINDS}, got {type(source).__name__}")
        if timeout is not None:
            self.timeout = timeout

    @property
    def rank(self):
        return self._impl.rank

    @property
    def world_size(self):
        return self._impl.world_size

    @property
    def backend(self):
        """"local" (one process), "mpi" or "torch.distributed (gloo)"."""
        return self._impl.backend

    @property
    def timeout(self):
        return self._impl.timeout

    @timeout.setter
    def timeout(self, seconds):
        self._impl.timeout = real_argument("timeout", seconds)  # the range is checked in C++

    def __repr__(self):
        return f"burst.Communicator(rank {self.rank} of {self.world_size}, {self.backend}, timeout {self.timeout} s)"


# One burst communicator per group or mpi4py communicator object passed to a call, made on
# its first use (every rank passes its objects in the same order, so the collective
# creations pair up). Holding the object keeps its id from being reused. Cleared at exit,
# before mpi4py finalises MPI.
_made = {}
_single = None
atexit.register(_made.clear)


def _refuse_uninitialised_torchrun(name):
    """None means this process alone; in a torchrun job that has not called
    init_process_group it is rather dist.group.WORLD read too early (it is None until then),
    which would make every rank compute alone on its shard."""
    size = os.environ.get("WORLD_SIZE", "1")
    if ("TORCHELASTIC_RUN_ID" in os.environ and size.isdigit() and int(size) > 1
            and not (torch.distributed.is_available() and torch.distributed.is_initialized())):
        raise ValueError(f"{name}: None (this process alone) in a torchrun job of {size} processes that has not "
                         f"called torch.distributed.init_process_group (dist.group.WORLD is None until then); "
                         f"initialise the group first, or pass burst.Communicator() to run on this process alone")


def communicator(source, name="comm"):
    """The burst.Communicator of `source` (None, a group, an mpi4py communicator or a
    burst.Communicator), made on first use."""
    global _single
    if isinstance(source, Communicator):
        return source
    if source is None:
        _refuse_uninitialised_torchrun(name)
        if _single is None:
            _single = Communicator()
        return _single
    if torch.distributed.is_available() and source is torch.distributed.GroupMember.NON_GROUP_MEMBER:
        raise ValueError(f"{name}: this rank is not a member of the group (torch.distributed.new_group returned "
                         f"NON_GROUP_MEMBER here); only its members may use it")
    cached = _made.get(id(source))
    if cached is None or (cached.mpi is not source and cached.group is not source):
        if not (_is_process_group(source) or _is_mpi4py(source)):
            raise TypeError(f"{name}: expected {_KINDS}, got {type(source).__name__}")
        cached = Communicator(group=source) if _is_process_group(source) else Communicator(source)
        _made[id(source)] = cached
    return cached


def resolve(group, comm):
    """The communicator of a call given `group=` and/or `comm=` (at most one of them)."""
    if group is not None and comm is not None:
        raise ValueError(f"group and comm: expected one of them, got group={group!r} and comm={comm!r}")
    return communicator(group, "group") if group is not None else communicator(comm, "comm")
