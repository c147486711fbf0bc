"""Training tasks: thin Celery wrappers around farm.runs.service.

`farm.train` runs on a `gpu` worker (concurrency 1) and may last days: it acks early
and holds the run's lease; `farm.reap` (beat) resubmits runs whose holder died or whose
lease expired, and the next `farm.train` resumes them from their newest good checkpoint.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

from celery.exceptions import Ignore

from farm.errors import FarmError, HostUnreachable, NoSpace, RunFailed
from farm.eval import should_evaluate
from farm.runs.model import Run, RunState
from farm.runs.progress import Progress, rate
from farm.remote.flow import localize_run
from farm.runs.reaper import lost_runs, requeue
from farm.runs.service import Hooks, execute_run
from workers.app import app
from workers.tasks import notify, store
from workers.tasks.eval import drop_evaluated_pins, enqueue_eval

log = logging.getLogger(__name__)

#: Minimum seconds between two progress events sent to Flower for one run.
PROGRESS_EVERY = 2.0


def task_name(run: Run) -> str:
    """The name Flower lists a run's task under: `farm.train <run>`, and for a sweep's
    trial `farm.train <run> <sweep>#<trial>`."""
    name = f"farm.train {run.id}"
    if run.sweep:
        name += f" {run.sweep}#{run.trial}" if run.trial is not None else f" {run.sweep}"
    return name


def enqueue_train(run_id: str, queue: str | None = None, task_id: str | None = None, *,
                  run: Run | None = None) -> str:
    """Send a run to the GPU queue (or `queue`) under its Flower name (task_name).

    The task id is the one recorded on the run (`task_id` when given): saving the run
    again after sending could overwrite what a fast worker has written meanwhile, so
    every sender (the CLI, a sweep, the reaper) records the id first and sends second.
    `run`: the record, when the caller holds it (else it is read)."""
    run = run or store().runs.load(run_id)
    options = {"shadow": task_name(run)}
    if queue:
        options["queue"] = queue
    result = train.apply_async(args=[run_id], task_id=task_id or run.task_id, **options)
    return result.id


@app.task(name="farm.train", bind=True, acks_late=False, track_started=True,
          throws=(RunFailed,), max_retries=None)  # waits for a host or disk for ever
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
        """Evaluate finite checkpoints at the run's cadence, on the `eval` queue."""
        if c.finite and _due(run, c):
            _send_eval(st, run, c)

    def started(run, attempt) -> None:
        with _shown(run_id):
            self.send_event("task-progress", result=f"{run_id} attempt {attempt.number} started: {attempt.reason}",
                            run_id=run_id)
        if attempt.number > 1:  # a worker that died between a checkpoint and its
            _catch_up_evals(st, run)  # evaluation's message: send what it could not

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
    except FarmError as e:
        log.info("run %s ended with %s", run_id, e)
        raise
    try:  # what is still waiting for its evaluation stays pinned
        drop_evaluated_pins(run_id)
    except FarmError:
        log.warning("run %s: could not read its evaluations to drop pins", run_id)
    if run.state is RunState.FAILED:  # queued once, posted by a cpu worker: no wait here
        notify.run_failed(run)
    if run.sweep:  # start the sweep's next trial now, not at beat's next tick
        from workers.tasks.sweep import on_run_finished
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


def _due(run, c) -> bool:
    previous = max((k.iteration for k in run.checkpoints
                    if k is not c and k.iteration < c.iteration), default=0)
    return should_evaluate(c.iteration, run.max_batches, run.eval_every, last=previous)


def _send_eval(st, run, c) -> None:
    """Queue a checkpoint's evaluation and remember it was sent; one that cannot be
    queued is logged and training carries on."""
    try:
        enqueue_eval(run.id, c.path, c.iteration, host=app.farm_settings.host_name)
        st.evaluations.mark_sent(run.id, c.iteration)
    except Exception:  # noqa: BLE001 - the broker's errors are many; training wins
        log.exception("could not queue the evaluation of %s", c.path)


def _catch_up_evals(st, run) -> None:
    """Send the evaluations due for checkpoints still on disk that were never sent."""
    try:
        sent = st.evaluations.sent(run.id) | {e.iteration for e in st.evaluations.all(run.id)}
    except FarmError:
        return
    for c in run.checkpoints:
        if c.finite and c.iteration not in sent and _due(run, c) and os.path.isfile(c.path):
            log.warning("run %s: evaluation of iteration %d was never sent; sending it now",
                        run.id, c.iteration)
            _send_eval(st, run, c)


@app.task(name="farm.reap", send_events=False)  # housekeeping: not in Flower (FarmAMQP)
def reap() -> list[str]:
    """Resubmit runs whose holder died (seen at once on this machine) or whose lease
    expired (a holder elsewhere); every running run is looked at, however old."""
    st = store()
    resumed = []
    for run_id, holder in lost_runs(st):
        try:
            run = requeue(st, run_id, holder,
                          lambda rid, queue, task_id: enqueue_train(rid, queue, task_id=task_id))
        except Exception:  # noqa: BLE001 - one run the broker refused must not stop the rest
            log.exception("run %s: could not resubmit it; the next pass tries again", run_id)
            continue
        if run is not None:
            log.warning("run %s: %s (task %s)", run.id, run.message, run.task_id)
            resumed.append(run.id)
    return resumed
