"""Sweep tasks: thin Celery wrappers around farm.sweeps.service.advance.

Four things move a sweep on, and any of them may run at the same time as another
(advance holds the sweep's lock and never submits a trial twice):
- `on_run_finished(run)`, called by `farm.train` when a sweep's run ends: starts the next
  trial at once, so a GPU does not wait for beat between two trials;
- `on_evaluation(run_id)`, called by `farm.eval.checkpoint` when an evaluation of an
  ended trial lands: the sweep closes once its last one has (its summary names the best);
- `farm.sweep.tick_all`, on beat every few seconds: early stopping and budgets for
  running trials, recovery after a controller died. Housekeeping, so it sends no task
  events (workers.app.FarmAMQP): Flower lists the trainings, not thousands of ticks;
- `farm.sweep.tick`, sent by `farm.dataset.synth_recipe` when a dataset its trials wait
  for is built.
"""
from __future__ import annotations

import logging
import time

from farm.runs.model import Run
from farm.sweeps.service import advance
from workers.app import app
from workers.tasks import notify, store
from workers.tasks.enqueue import enqueue_recipe_build, enqueue_train
from workers.presence import active_queues

log = logging.getLogger(__name__)

#: Seconds the end-of-run hook waits for a tick that holds the sweep (ticks take ms).
HOOK_LOCK_WAIT = 10.0


#: Seconds an answer to "does a worker consume the eval queue?" is reused (the question
#: is a broadcast of about a second, asked only while a sweep waits to close).
EVALUATORS_TTL = 30.0

_evaluators = {"at": -EVALUATORS_TTL, "up": False}


def evaluators_up() -> bool:
    """Whether a worker consumes the eval queue now: a sweep waits for its last
    evaluations only then (they would stay queued otherwise)."""
    now = time.monotonic()
    if now - _evaluators["at"] >= EVALUATORS_TTL:
        from workers.app import ROUTES
        queue = ROUTES["farm.eval.*"]["queue"]
        replies = active_queues(app, store(), 1.0)
        _evaluators["up"] = any(q.get("name") == queue for qs in replies.values()
                                for q in qs or ())
        _evaluators["at"] = now
    return _evaluators["up"]


@app.task(name="farm.sweep.tick")
def tick(sweep_id: str) -> dict:
    """Advance one sweep (idempotent)."""
    result = advance(store(), app.farm_settings, sweep_id, enqueue=enqueue_train, wait=2.0,
                     build=enqueue_recipe_build, evaluators=evaluators_up)
    for stop in result.stopped:
        log.info("sweep %s: stopping trial %d (%s): %s", sweep_id, stop.index, stop.run_id,
                 stop.reason)
    _ended(result)
    return result.to_dict()


@app.task(name="farm.sweep.tick_all", send_events=False)  # housekeeping (FarmAMQP)
def tick_all() -> list[dict]:
    """Advance every sweep that still has work (what beat runs)."""
    st = store()
    results = []
    for sweep_id in st.sweeps.active_ids():
        try:
            result = advance(st, app.farm_settings, sweep_id, enqueue=enqueue_train,
                             build=enqueue_recipe_build, evaluators=evaluators_up)
            _ended(result)
            results.append(result.to_dict())
        except Exception:  # one broken sweep must not starve the others
            log.exception("sweep %s: tick failed", sweep_id)
    return results


def _ended(tick) -> None:
    """The advance that closed a sweep notifies its end (farm.notify; queued once)."""
    if tick.ended:
        notify.sweep_ended(tick.sweep_id)


def on_run_finished(run: Run) -> None:
    """Start the next trial of `run`'s sweep now; called by `farm.train` at the end of
    every run. Never raises: the run's own result must not depend on sweep bookkeeping
    (beat's next tick catches up on anything missed here)."""
    if not run.sweep or not run.state.finished:
        return
    try:
        _ended(advance(store(), app.farm_settings, run.sweep, enqueue=enqueue_train,
                       early_stop=False, wait=HOOK_LOCK_WAIT, build=enqueue_recipe_build,
                       evaluators=evaluators_up))
    except Exception:
        log.exception("sweep %s: could not start the next trial after run %s", run.sweep,
                      run.id)


def on_evaluation(run_id: str) -> None:
    """An evaluation of `run_id` was recorded: when the run is an ended trial, the sweep
    may now close (it waits for its trials' last evaluations). Never raises."""
    try:
        run = store().runs.load(run_id)
    except Exception:
        log.exception("run %s: could not read it after its evaluation", run_id)
        return
    on_run_finished(run)
