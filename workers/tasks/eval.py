"""Evaluation tasks: a checkpoint's mAP on the `eval` queue, while training goes on.

Routing is central (workers.app.ROUTES: `farm.eval.*` -> `eval`), so evaluation runs on
whichever host listens there (a CPU box, or the trainer itself), never pausing training.
The training task sends them (workers.tasks.enqueue.enqueue_eval pins the file first).
"""
from __future__ import annotations

import logging
import os

from farm.errors import HostUnreachable
from farm.eval.checkpoints import eval_dir, evaluate_run_checkpoint
from farm.remote import flow
from workers.app import app
from workers.tasks import store
from workers.tasks.sweep import on_evaluation

log = logging.getLogger(__name__)


@app.task(name="farm.eval.checkpoint", bind=True)
def checkpoint(self, run_id: str, path: str, iteration: int, host: str | None = None) -> dict:
    """Evaluate one checkpoint of a run, record it, keep the run's best.weights."""
    s = app.farm_settings
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    remote = host is not None and host != s.host_name
    try:
        local = _fetch_checkpoint(run_id, path, host) if remote else path
        result = evaluate_run_checkpoint(store(), s, run_id, local, int(iteration),
                                         worker=worker,
                                         prepare=lambda run: _localize(run, s))
    except HostUnreachable as e:
        log.warning("evaluation of %s @%s waits for a host: %s", run_id, iteration, e)
        raise self.retry(exc=e, countdown=s.host_retry_delay, max_retries=s.host_retries)
    on_evaluation(run_id)  # an ended trial's last evaluation lets its sweep close
    return {k: getattr(result, k) for k in ("run_id", "iteration", "map", "evaluator",
                                            "seconds", "error")}


def _localize(run, s) -> None:
    """The run's dataset and screens set, fetched here when they live on another host."""
    flow.localize_run(run, s)
    flow.localize_screens(run, s)


def _fetch_checkpoint(run_id: str, path: str, host: str) -> str:
    """Pull a pinned checkpoint from the training host into this host's eval queue."""
    with flow.connect(app.farm_settings, host) as src:
        queue = eval_dir(app.farm_settings.runs_dir, run_id) / "queue"
        return str(flow.fetch_file(src, path, queue))

