"""Runs `python3 -m torch.distributed.run` (torchrun) on a free loopback port with the flags
torch 1.13 needs under Python 3.11 (--redirects 2 --tee 2: its default redirects fail there)
and gloo kept on the loopback interface. Arguments after the script's name go to torchrun:
    python3 python/tests/torchrun.py --nproc_per_node 4 -m pytest python/tests/test_torch.py"""

import os
import socket
import sys

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1",
                          "--master_port", str(port), "--redirects", "2", "--tee", "2", "--monitor_interval", "0.5",
                          *sys.argv[1:]])
