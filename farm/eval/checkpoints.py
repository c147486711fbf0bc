"""A run's checkpoints evaluated: recorded in the store, the best kept as best.weights.

farm.eval.evaluate scores one checkpoint on a dataset; here a run's checkpoint is
scored on the run's own valid list (and on its screens set, when the run has one),
recorded with the run, the host and the worker that made it, and copied to the run's
best.weights when it ranks first. Checkpoints waiting for their evaluation are pinned
under a private name, since training keeps only its newest copies.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

from farm.darknet.objdata import read_obj_data, resolve, write_obj_data
from farm.errors import BadInput, FarmError
from farm.eval.evaluate import evaluate_checkpoint
from farm.eval.evaluation import Evaluation
from farm.eval.screens import screens_record
from farm.runs import workspace


def rank_score(run, result: Evaluation) -> float | None:
    """What ranks a run's checkpoints (its best.weights): the screens mAP for a run
    ranked on screens (`farm train --eval-screens`, a sweep's screens_map50), else the
    tile mAP."""
    if run.rank_by == "screens_map50":
        return result.screens.score_map if result.screens else None
    return result.score_map


def eval_dir(runs_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(runs_dir) / run_id / "eval"


def best_weights_path(runs_dir: str | os.PathLike, run_id: str) -> Path:
    """The run's own best weights. darknet's `_best` is reset by every restart (best_map
    starts at -1 in each process) and written even when the mAP is nan."""
    return Path(runs_dir) / run_id / "best.weights"


def best_weights_location(store, run, here: str = "") -> tuple[str, str] | None:
    """(host, path) of the run's best weights: its best evaluation's (farm.eval keeps
    them as the run's best.weights, on the host that evaluated), else the newest
    checkpoint written while the loss was finite (on the host that trained it)."""
    best = store.evaluations.best(run.id)
    if best and best.best_weights:
        host = best.host or ""
        if (host and host != here) or os.path.isfile(best.best_weights):
            return host, best.best_weights
    c = next((c for c in run.checkpoints if c.path == run.good_checkpoint), None)
    if c is None:
        return None
    return run.attempts[c.attempt - 1].host, c.path


def pin_checkpoint(runs_dir: str | os.PathLike, run_id: str, path: str | os.PathLike,
                   iteration: int) -> Path:
    """A private name for a checkpoint waiting for its evaluation: training replaces its
    copies (only the newest good one is kept), and evaluation may run minutes later on
    another worker. A hard link costs nothing; a copy when the link is impossible."""
    queue = eval_dir(runs_dir, run_id) / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    pinned = queue / f"iter-{iteration:07d}-{uuid.uuid4().hex[:6]}.weights"
    try:
        os.link(path, pinned)
    except OSError:
        shutil.copyfile(path, pinned)
    return pinned


def unpin_evaluated(store, runs_dir: str | os.PathLike, run_id: str) -> None:
    """Drop this host's pinned checkpoints of `run_id` whose evaluation is recorded: an
    eval worker on another host pulled its own copy and cannot remove this one."""
    done = {e.iteration for e in store.evaluations.all(run_id)}
    for pinned in (eval_dir(runs_dir, run_id) / "queue").glob("iter-*.weights"):
        if int(pinned.name.split("-")[1]) in done:
            pinned.unlink(missing_ok=True)


def evaluate_run_checkpoint(store, settings, run_id: str, weights: str, iteration: int, *,
                            evaluator: str = "auto", worker: str = "",
                            prepare=None) -> Evaluation:
    """Evaluate a run's checkpoint on its valid list, record it, and keep `best.weights`.

    A checkpoint that cannot be evaluated (a poisoned one, bad input) is recorded with its
    `error`, so the board shows why it has no mAP. `prepare(run)` makes the run's files
    local first (farm.remote.flow.localize_run); what it raises is not recorded, so a
    host that is away can be waited for.
    """
    run = store.runs.load(run_id)
    if prepare is not None:
        prepare(run)
    folder = eval_dir(settings.runs_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    record = next((c for c in run.checkpoints if c.iteration == iteration), None)
    try:
        if record is not None and not record.finite:
            raise BadInput(f"the checkpoint at iteration {iteration} was written after the "
                           "loss went non-finite: its weights are poisoned", path=weights)
        cfg_path = folder / workspace.CFG_NAME
        if not cfg_path.exists():
            workspace.training_cfg(run, {}).save(cfg_path)
        result = evaluate_checkpoint(weights, data=_run_obj_data(run, settings, folder),
                                     cfg=cfg_path, evaluator=evaluator,
                                     darknet=settings.darknet,
                                     dialect=settings.darknet_dialect, base_dir=run.base_dir)
        result = replace(result, sha256=_sha256(weights))
    except FarmError as e:
        result = Evaluation(error=str(e))
    if run.eval_screens and not result.error:
        result = replace(result, screens=screens_record(weights, run.eval_screens, cfg_path,
                                                        dialect=settings.darknet_dialect,
                                                        darknet=settings.darknet))
    result = replace(result, run_id=run_id, iteration=iteration, source=weights,
                     attempt=record.attempt if record else None, worker=worker,
                     host=settings.host_name, evaluated_at=time.time())
    score = rank_score(run, result)
    if store.evaluations.record(run_id, replace(result, best_weights=str(
            best_weights_path(settings.runs_dir, run_id))), score):
        _install_best(store, run_id, weights, iteration,
                      best_weights_path(settings.runs_dir, run_id))
    _unpin(folder, weights)
    return result


def _run_obj_data(run, settings, folder: Path) -> Path:
    """obj.data for evaluation: the run's absolute lists (written at its first attempt)."""
    inputs = workspace.run_dir(settings.runs_dir, run.id) / "inputs"
    values = read_obj_data(run.data)
    data_dir = os.path.dirname(run.data)
    out = {"classes": values.get("classes", "1")}
    if (inputs / "valid.txt").exists():
        out["valid"] = str(inputs / "valid.txt")
    elif "valid" in values:
        out["valid"] = resolve(values["valid"], run.base_dir, data_dir)
    if (inputs / "obj.names").exists():
        out["names"] = str(inputs / "obj.names")
    elif "names" in values:
        out["names"] = resolve(values["names"], run.base_dir, data_dir)
    path = folder / "obj.data"
    tmp = folder / f".obj-{uuid.uuid4().hex[:6]}.data"  # evaluations may run side by side
    write_obj_data(tmp, out)
    os.replace(tmp, path)
    return path


def _install_best(store, run_id: str, weights: str, iteration: int, best: Path) -> None:
    """Copy the checkpoint to best.weights, unless a better one got there meanwhile."""
    tmp = best.with_name(f".best-{iteration}-{uuid.uuid4().hex[:6]}.tmp")
    shutil.copyfile(weights, tmp)
    with open(best.with_name(".best.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = store.evaluations.best(run_id)
        if held and held.iteration == iteration:
            os.replace(tmp, best)
        else:
            tmp.unlink()


def _unpin(folder: Path, weights: str) -> None:
    """Remove a pinned checkpoint (see pin_checkpoint) once it has been evaluated."""
    path = Path(weights)
    if path.parent == folder / "queue":
        path.unlink(missing_ok=True)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
