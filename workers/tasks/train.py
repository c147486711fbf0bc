"""Training tasks: thin Celery wrappers around farm.runs.service and farm.runs.reaper.

`farm.train` runs on a `gpu` worker (concurrency 1) and may last days: it acks early
and holds the run's lease; `farm.reap` (beat) resubmits runs whose holder died or whose
lease expired, and the next `farm.train` resumes them from their newest good checkpoint.
A run's state changes in farm.runs.life only; this module reports it to Flower and
sends what follows (evaluations at farm.eval.cadence's pace, the sweep's next trial).
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

from billiard.exceptions import WorkerLostError
from celery import states
from celery.exceptions import Ignore

from farm.errors import FarmError, HostUnreachable, LeaseLost, NoSpace, RunFailed
from farm.eval import cadence
from farm.eval.checkpoints import unpin_evaluated
from farm.runs.model import Run, RunState
from farm.runs.progress import Progress, rate
from farm.remote.flow import localize_run
from farm.runs.reaper import reap as reap_lost
from farm.runs.service import Hooks, execute_run
from workers.app import app
from workers.tasks import notify, store
from workers.tasks.enqueue import enqueue_eval, enqueue_train
from workers.tasks.sweep import on_run_finished

log = logging.getLogger(__name__)

#: Minimum seconds between two progress events sent to Flower for one run.
PROGRESS_EVERY = 2.0


@app.task(name="farm.train", bind=True, acks_late=False, track_started=True,
          throws=(RunFailed, LeaseLost), max_retries=None)  # waits for a host or disk for ever
def train(self, run_id: str) -> dict:
    """Train the run to its end. Flower's final state is the run's: SUCCESS (completed),
    FAILURE with the reason (failed), REVOKED (cancelled); PROGRESS while it trains."""
    st = store()
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    last = {"at": 0.0, "attempt": 0}
    samples: deque[tuple[float, int]] = deque(maxlen=2000)  # (wall time, iteration)

    def progress(run, it) -> None:
        now = time.monotonic()
        if run.current.number != last["attempt"]:  # a restart: speed is measured afresh
            last["attempt"] = run.current.number
            samples.clear()
        samples.append((now, it.number))
        if now - last["at"] < PROGRESS_EVERY:
            return
        last["at"] = now
        p = Progress(iteration=it.number, max_batches=run.max_batches, speed=rate(samples),
                     avg_loss=it.avg_loss, restarts=len(run.attempts) - 1,
                     attempt=run.current.number)
        text = f"attempt {p.attempt}: {p.line(with_map=False)}"
        with _shown(run_id):
            self.send_event("task-progress", result=text, run_id=run_id,
                            iteration=it.number, avg_loss=it.avg_loss)
            self.update_state(state="PROGRESS", meta={"run_id": run_id, "attempt": p.attempt,
                                                      "iteration": it.number,
                                                      "avg_loss": it.avg_loss,
                                                      "iterations_per_second": p.speed,
                                                      "eta_seconds": p.eta})

    def checkpoint(run, c) -> None:
        cadence.on_checkpoint(st, run, c, _send_eval)

    def started(run, attempt) -> None:
        with _shown(run_id):
            self.send_event("task-progress", result=f"{run_id} attempt {attempt.number} started: {attempt.reason}",
                            run_id=run_id)
        if attempt.number > 1:  # a worker that died between a checkpoint and its
            cadence.catch_up(st, run, _send_eval)  # evaluation's message: send it now

    def fetch(run) -> None:
        got = localize_run(run, app.farm_settings)
        if got is not None:
            log.info("run %s: dataset %s here (%d files fetched, %d linked, %d bytes)",
                     run_id, got.path, got.fetched, got.linked, got.bytes)

    # A worker's cold shutdown sends SIGTERM here; billiard turns it into SystemExit, so
    # darknet's group is killed and the lease released: beat resubmits the run and it
    # resumes from its newest good checkpoint. Cancelling is `farm cancel` (a Redis flag).
    try:
        run = execute_run(st, app.farm_settings, run_id, worker=worker,
                          hooks=Hooks(progress=progress, attempt_started=started,
                                      checkpoint=checkpoint, fetch=fetch))
    except HostUnreachable as e:  # the run stays queued and waits for that host
        log.warning("run %s waits for a host: %s", run_id, e)
        # (retry's own max_retries=None means the task's limit: unlimited is set above)
        raise self.retry(exc=e, countdown=app.farm_settings.host_retry_delay)
    except NoSpace as e:  # queued too, its message says what it waits for
        log.warning("run %s waits for disk space: %s", run_id, e.message)
        raise self.retry(exc=e, countdown=app.farm_settings.disk_retry_delay)
    except LeaseLost as e:  # frozen or cut off past its lease: its successor goes on
        log.warning("run %s: %s", run_id, e.message)
        raise LeaseLost(f"{run_id}: {e.message}; the run goes on as task "
                        f"{st.runs.load(run_id).task_id}") from None
    except FarmError as e:
        log.info("run %s ended with %s", run_id, e)
        raise
    try:  # what is still waiting for its evaluation stays pinned
        unpin_evaluated(st, app.farm_settings.runs_dir, run_id)
    except FarmError:
        log.warning("run %s: could not read its evaluations to drop pins", run_id)
    if run.state is RunState.FAILED:  # queued once, posted by a cpu worker: no wait here
        notify.run_failed(run)
    if run.sweep:  # start the sweep's next trial now, not at beat's next tick
        on_run_finished(run)
    if run.state is RunState.FAILED:
        raise RunFailed(f"{run.id}: {run.message}")
    if run.state is RunState.CANCELLED:
        _end_revoked(self, run)
    return {"run_id": run.id, "state": run.state.value, "attempts": len(run.attempts),
            "message": run.message}


@contextmanager
def _shown(run_id: str) -> Iterator[None]:
    """Around what only Flower shows: a broker that is away for a moment (a restarted
    Redis) must not stop a training."""
    try:
        yield
    except Exception:  # noqa: BLE001 - kombu's and the result backend's errors are many
        log.warning("run %s: progress not sent to Flower (is Redis restarting?)", run_id)


def _end_revoked(task, run: Run) -> None:
    """End the task as REVOKED, in Flower and in the result backend (a cancelled run).

    Flower's state machine (celery.events.state.Task.event) lets any custom state, such
    as the PROGRESS this task has been sending, outrank REVOKED, so a `task-revoked`
    event alone would leave it PROGRESS for ever. RETRY is the one state that every
    event replaces: a `task-retry` event (a name of our own, so Flower's Retried counter
    stays true) steps back to it first. Ignore then keeps Celery from recording SUCCESS
    over the revocation."""
    task.send_event("task-retry")
    task.send_event("task-revoked", terminated=False, signum=None, expired=False,
                    result=run.message)
    task.backend.mark_as_revoked(task.request.id, run.message, request=task.request)
    raise Ignore()


def _send_eval(run: Run, c) -> None:
    """Queue a checkpoint's evaluation on the `eval` queue (pinned here, where it was
    written)."""
    enqueue_eval(run.id, c.path, c.iteration, host=app.farm_settings.host_name)


@app.task(name="farm.reap", send_events=False)  # housekeeping: not in Flower (FarmAMQP)
def reap() -> list[str]:
    """Resubmit runs whose holder died (seen at once on this machine) or whose lease
    expired (a holder elsewhere); every running run is looked at, however old."""
    return reap_here()


def reap_here() -> list[str]:
    """One pass of the reaper from this process (beat's task, and every worker's own
    watch, workers.reaping): what it queued again."""
    return reap_lost(store(), lambda run_id, queue, task_id:
                     enqueue_train(run_id, queue, task_id=task_id), _end_lost)


def _end_lost(task_id: str, worker: str, why: str) -> None:
    """End a lost training task as FAILURE (WorkerLostError, why), in Flower and in the
    result backend. A worker killed outright never sends its task's end, so Flower would
    show it STARTED for ever; the reaper, which saw it lost, sends it in that worker's
    name (Flower files a task under the worker of its last event). A task Celery ended
    itself (a pool process lost under a living worker) is left as Celery said."""
    if app.AsyncResult(task_id).state in states.READY_STATES:
        return
    exc = WorkerLostError(why)
    with app.events.default_dispatcher(hostname=worker.rsplit(":", 1)[0]) as events:
        events.send("task-failed", uuid=task_id, exception=repr(exc), traceback=None)
    app.backend.mark_as_failure(task_id, exc)
