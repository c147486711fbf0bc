"""Runs whose worker is gone, found and queued again (`reap`, what beat's `farm.reap` runs).

A run in the running set is lost when no one holds its lease (it expired: the holder
stopped renewing it, on whatever machine), or when its lease names a process on this
machine that no longer exists: that is seen at once, without waiting for the lease to
expire, which is what brings a run whose worker was killed back to training within
seconds. The next `farm.train` resumes it from its newest good checkpoint.

Never two darknet processes for one run: a lost run whose darknet still lives here is
not queued again until that darknet is gone.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from typing import Callable

from farm import procs
from farm.errors import NotFound
from farm.runs.life import move
from farm.runs.model import Run, RunState
from farm.store import Store
from farm.store.lease import holder_pid

log = logging.getLogger(__name__)

#: Seconds a new holder waits for the darknet of the attempt it takes over to exit
#: (its old holder kills it on losing the lease) before killing it itself.
LEFTOVER_WAIT = 5.0

Enqueue = Callable[[str, "str | None", str], object]  # (run_id, queue, task_id)
#: (the lost task's id, the worker that held it, why it ended): told to whoever shows
#: tasks (Flower), since a worker killed outright never says that its task ended.
Ended = Callable[[str, str, str], object]


def reap(store: Store, enqueue: Enqueue, ended: Ended | None = None) -> list[str]:
    """Queue again every run whose holder died (seen at once on this machine) or whose
    lease expired (a holder elsewhere), however old; the ids of those queued. A run the
    broker refused is left for the next pass and does not stop the others."""
    resumed = []
    for run_id, holder in lost_runs(store):
        try:
            run = requeue(store, run_id, holder, enqueue, ended)
        except Exception:  # noqa: BLE001 - the broker's errors are many
            log.exception("run %s: could not resubmit it; the next pass tries again", run_id)
            continue
        if run is not None:
            log.warning("run %s: %s (task %s)", run.id, run.message, run.task_id)
            resumed.append(run.id)
    return resumed


def lost_runs(store: Store) -> list[tuple[str, str | None]]:
    """(run id, lease) of every run whose holder is gone; lease None: it expired."""
    lost = []
    for run_id, holder in store.runs.running_leases().items():
        if holder is None:
            lost.append((run_id, None))
        else:
            pid = holder_pid(holder)
            if pid is not None and pid.dead_here():
                lost.append((run_id, holder))
    return lost


def requeue(store: Store, run_id: str, holder: str | None, enqueue: Enqueue,
            ended: Ended | None = None) -> Run | None:
    """Queue a lost run again (the run as queued), or None when it is not time: another
    reaper was first, the run ended, or its darknet is still alive here (killed now, so
    that the next pass queues it)."""
    try:
        run = store.runs.load(run_id)
    except NotFound:
        run = None  # requeue_lost drops it from the running set
    darknet = leftover_darknet(run) if run else None
    if darknet is not None:
        log.warning("run %s: darknet (pid %d) outlived its worker; killing it", run_id, darknet)
        procs.kill_group(darknet)
        return None
    worker = (run and run.worker) or "?"
    why = (f"the process of worker {worker} is gone" if holder
           else f"the lease of worker {worker} expired")
    task_id = str(uuid.uuid4())
    queued = store.runs.requeue_lost(run_id, holder, task_id, f"{why}; resubmitted", why)
    if queued is None:
        return None
    try:
        enqueue(run_id, queued.queue, task_id)
    except Exception:
        # not sent: running again with no lease, so that the next pass tries again
        store.runs.save(move(queued, RunState.RUNNING))
        raise
    if ended is not None and run is not None and run.task_id:
        try:
            ended(run.task_id, worker, f"{why}; resubmitted as task {task_id}")
        except Exception:  # noqa: BLE001 - only what is shown; the run goes on
            log.warning("run %s: could not end its lost task %s in Flower", run_id, run.task_id)
    return queued


def leftover_darknet(run: Run) -> int | None:
    """The pid of the darknet of the run's open attempt if it still runs on this machine
    (matched by its working directory: a reused pid is not mistaken for it)."""
    a = run.current
    if a is None or a.finished or not a.pid or not a.workdir:
        return None
    if procs.alive(a.pid) and procs.cwd(a.pid) == os.path.realpath(a.workdir):
        return a.pid
    return None


def stop_leftover_darknet(run: Run, wait: float = LEFTOVER_WAIT) -> None:
    """Before a new holder starts darknet: the previous attempt's darknet, if it still
    lives here, must be gone (its holder kills it when it finds its lease taken)."""
    pid = leftover_darknet(run)
    deadline = time.monotonic() + wait
    while pid is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        pid = leftover_darknet(run)
    if pid is not None:
        log.warning("run %s: killing the darknet (pid %d) of attempt %d left by its old "
                    "holder", run.id, pid, run.current.number)
        procs.kill_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + wait
        while leftover_darknet(run) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
