"""Evaluation tasks: a checkpoint's mAP on the `eval` queue, while training goes on.

Routing is central (workers.app.ROUTES: `farm.eval.*` -> `eval`), so evaluation runs on
whichever host listens there (a CPU box, or the trainer itself), never pausing training.
"""
from __future__ import annotations

import os

from farm.eval.evaluate import evaluate_run_checkpoint, pin_checkpoint
from workers.app import app
from workers.tasks import store


def enqueue_eval(run_id: str, path: str, iteration: int, *, queue: str | None = None) -> str:
    """Queue the evaluation of a run's checkpoint; returns the task id.

    Call it where the checkpoint was written (the training task's checkpoint hook): the
    file is pinned under the run's eval/ folder first, because training replaces its own
    copies long before a busy eval worker gets to it.
    """
    pinned = pin_checkpoint(app.farm_settings.runs_dir, run_id, path, iteration)
    options = {"shadow": f"farm.eval.checkpoint {run_id} @{iteration}"}
    if queue:
        options["queue"] = queue
    return checkpoint.apply_async(args=[run_id, str(pinned), iteration], **options).id


@app.task(name="farm.eval.checkpoint", bind=True)
def checkpoint(self, run_id: str, path: str, iteration: int) -> dict:
    """Evaluate one checkpoint of a run, record it, keep the run's best.weights."""
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    result = evaluate_run_checkpoint(store(), app.farm_settings, run_id, path, int(iteration),
                                     worker=worker)
    return {k: result.get(k) for k in ("run_id", "iteration", "map", "evaluator", "seconds",
                                       "error")}
