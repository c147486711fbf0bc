"""The Celery queues' names, in one place: the inventory, runs and sweeps (farm/) and the
app, the CLI and the board (workers/, dashboard/) must spell them alike, or a task waits
in a queue nobody listens on.

Queues are named by role (`gpu`, `cpu`, `augment`, `eval`) and by host (`host.<name>`):
every worker also listens on its host's queue, so work can be pinned to a machine.
Which queues a worker listens on, and the command line that starts it, are here too.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

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


def celery_argv(python: str, *args: str) -> list[str]:
    """`celery -A workers.app ARGS` run by `python` (the app every process builds)."""
    return [python, "-m", "celery", "-A", "workers.app", *args]


@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker process of a host: its node name, queues and environment; its
    command line is built here alone (`farm hosts plan`, systemd units, `farm up`)."""

    host: str
    instance: str                   # `gpu0`, `gpu1`, … or `cpu`: the systemd instance name
    queues: tuple[str, ...]
    concurrency: int | None         # None: Celery's default, the host's CPU count
    env: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return f"{self.instance}@{self.host}"

    @property
    def gpu(self) -> bool:
        """It takes training (the `gpu` queue)."""
        return GPU in self.queues

    def worker_args(self) -> list[str]:
        """The arguments after `celery -A workers.app worker` (docs/celery.md §3)."""
        args = ["-n", self.node, "-Q", ",".join(self.queues)]
        if self.concurrency:
            args += ["-c", str(self.concurrency)]
        args += ["-P", "prefork", "--prefetch-multiplier=1"]
        if self.gpu:
            # Training acks early and holds a lease: a worker must not reserve a second run.
            args.append("--disable-prefetch")
        return args + ["-E", "-l", "INFO"]

    def argv(self, python: str = "python3") -> list[str]:
        return celery_argv(python, "worker", *self.worker_args())

    def command_line(self, python: str = "python3") -> str:
        """A shell line that starts this worker, every word quoted."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv(python))}".strip()

    def env_file(self) -> str:
        """The systemd EnvironmentFile of `farm-worker@<instance>` (ops/systemd)."""
        lines = [f"{k}={v}" for k, v in self.env.items()]
        lines.append(f"FARM_WORKER_ARGS={' '.join(self.worker_args())}")
        return "\n".join(lines) + "\n"
