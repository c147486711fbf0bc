"""The Celery queues' names, in one place: the inventory, runs and sweeps (farm/) and the
app, the CLI and the board (workers/, dashboard/) must spell them alike, or a task waits
in a queue nobody listens on.

Queues are named by role (`gpu`, `cpu`, `augment`, `eval`) and by host (`host.<name>`):
every worker also listens on its host's queue, so work can be pinned to a machine.
"""
from __future__ import annotations

GPU = "gpu"
CPU = "cpu"
AUGMENT = "augment"
EVAL = "eval"
#: the role queues, in the order a host's CPU worker lists them
ROLE_QUEUES = (GPU, CPU, AUGMENT, EVAL)
#: where training goes when no queue is given
TRAIN_DEFAULT = GPU

_HOST = "host."


def host_queue(name: str) -> str:
    """The queue only `name`'s workers listen on."""
    return f"{_HOST}{name}"


def pinned_host(queue: str | None) -> str | None:
    """The host a queue pins work to (`host.a` → `a`), None for a role queue."""
    return queue[len(_HOST):] if queue and queue.startswith(_HOST) else None
