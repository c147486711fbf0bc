"""Sending the farm's tasks, by name: the one module the task modules, the CLI and the
sweeps use to queue a training, an evaluation or a dataset build.

Tasks are sent by their registered name (`app.send_task`), so the task modules import
each other in one direction only (tests/unit/test_layers.py): `farm.train` and
`farm.eval.checkpoint` call the sweep's hooks (workers.tasks.sweep) in process, and
nothing imports them back; trainings, evaluations and builds are queued through here.
Routing stays central (workers.app.ROUTES); a sender never needs the receiving task's
code, which may not be installed on its host (the dataset tasks on a GPU-only host).
"""
from __future__ import annotations

from farm.eval.checkpoints import pin_checkpoint, unpin_evaluated
from farm.runs.model import Run
from workers.app import app
from workers.tasks import store


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
    return _send("farm.train", [run_id], queue, task_id=task_id or run.task_id,
                 shadow=task_name(run))


def enqueue_eval(run_id: str, path: str, iteration: int, *, queue: str | None = None,
                 host: str | None = None) -> str:
    """Queue the evaluation of a run's checkpoint; returns the task id.

    Call it where the checkpoint was written (the training task's checkpoint hook): the
    file is pinned under the run's eval/ folder first, because training replaces its own
    copies long before a busy eval worker gets to it. `host` is where that is: an eval
    worker on another host pulls the file (and the run's dataset) from it.
    """
    runs_dir = app.farm_settings.runs_dir
    if host is not None:  # pins pulled by other hosts are dropped here once evaluated
        unpin_evaluated(store(), runs_dir, run_id)
    pinned = pin_checkpoint(runs_dir, run_id, path, iteration)
    return _send("farm.eval.checkpoint", [run_id, str(pinned), iteration, host], queue,
                 shadow=f"farm.eval.checkpoint {run_id} @{iteration}")


def enqueue_recipe_build(key: str) -> str:
    """Send the build of recipe `key` to the `augment` queue; returns the task id."""
    return _send("farm.dataset.synth_recipe", [key])


def enqueue_sweep_tick(sweep_id: str) -> str:
    """Advance a sweep on a `cpu` worker (a dataset its trials waited for is built)."""
    return _send("farm.sweep.tick", [sweep_id])


def _send(name: str, args: list, queue: str | None = None, **options) -> str:
    if queue:
        options["queue"] = queue
    return app.send_task(name, args=args, **options).id
