"""One rank of a distributed stage (inside the user's process, started by torchrun through
child/distlaunch.py): who it is, where its events go, and the time its backward takes.

The time inside collectives, where the hooks can see it. DDP all-reduces gradients from
inside `loss.backward()`: its reducer launches bucket all-reduces as gradients become ready
and waits for them before backward returns. So backward time = the rank's own gradient work
+ its wait for every peer to reach the same all-reduce. A rank that arrives last hardly
waits; the others wait for it. The runner times every `torch.autograd.backward` call (what
`Tensor.backward` calls; frameworks call that) and reports the sum per optimizer step ("k"
in the "o" event). The analysis reads a rank's collective wait as its backward time above
the fastest rank's (analysis/ranks.py). Nothing of the user's model or DDP is wrapped: a comm
hook would change DDP, and torch.distributed.all_reduce wrappers do not see DDP's C++ reducer.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from loaderdoctor.protocol import EVENT_DIR_ENV, EVENT_FD_ENV


def rank() -> int | None:
    """This process's global rank when it is a rank of a distributed stage (started through
    child/distlaunch.py, which names the event directory), else None."""
    r = os.environ.get("RANK")
    if r is None or not os.environ.get(EVENT_DIR_ENV):
        return None
    try:
        return int(r)
    except ValueError:
        return None


def identity() -> dict:
    """What the hello event says of a rank (empty outside a distributed run)."""
    if rank() is None:
        return {}

    def num(name: str) -> int | None:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            return None

    return {"rank": rank(), "local_rank": num("LOCAL_RANK"), "world_size": num("WORLD_SIZE"),
            "node_rank": num("GROUP_RANK"), "restart": num("TORCHELASTIC_RESTART_COUNT"),
            "host": socket.gethostname()}


def event_fd() -> int | None:
    """The fd events are written to: this local rank's FIFO under a distributed stage (the
    launcher relays it), else the pipe inherited from loaderdoctor, else none."""
    event_dir = os.environ.get(EVENT_DIR_ENV)
    local = os.environ.get("LOCAL_RANK")
    if event_dir and local is not None:
        try:
            return os.open(os.path.join(event_dir, f"rank-{int(local)}.fifo"), os.O_WRONLY)
        except (OSError, ValueError):
            return None
    fd = os.environ.get(EVENT_FD_ENV)
    return int(fd) if fd else None


def time_backward(rec: Any) -> None:
    """Sum the time of every backward call between two optimizer steps into rec.backward_s
    (the recorder writes it into the step's "o" event and starts again from zero)."""
    import torch.autograd as autograd

    orig = autograd.backward
    if getattr(orig, "_ld_timed", False):
        return
    clock = rec.clock
    rec.backward_s = 0.0

    def backward(*args, **kwargs):
        t0 = clock()
        try:
            return orig(*args, **kwargs)
        finally:
            if not rec.in_child and rec.backward_s is not None:
                rec.backward_s += clock() - t0

    backward._ld_timed = True
    backward.__wrapped__ = orig
    backward.__doc__ = orig.__doc__
    autograd.backward = backward
