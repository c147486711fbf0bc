"""Each trial's objective as the controller needs it: read incrementally, kept small.

The metrics stream holds one entry per iteration, so an overnight sweep of 6000-iteration
trials would make every tick re-read tens of thousands of entries. Each tick reads only
the entries after the trial's cursor and folds them into one point per `STRIDE`
iterations (the lowest finite avg loss in it, with its iteration), kept in the sweep's
curves hash. mAP comes from evaluations, a handful per run, read whole.

Where mAP comes from: the farm's evaluations of the run's checkpoints (`Store.evaluations`,
farm.eval) when there are any, else the `-map` blocks darknet printed (`Store.maps`).
Debian's darknet prints none, so there a `map50` sweep ranks by the farm's evaluations.
Screens mAP (a sweep with `eval.screens`) comes from the same evaluations only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from farm.runs.model import Run
from farm.store import Store
from farm.sweeps.controller import Points
from farm.sweeps.model import Trial
from farm.store.sweeps import SweepStore

#: Iterations folded into one point of a loss curve.
STRIDE = 10


@dataclass(frozen=True)
class Observed:
    iteration: int
    curve: Points   # the objective: `loss` or `maps`
    maps: Points
    loss: Points = ()  # the lowest avg loss of every STRIDE iterations
    screens: Points = ()  # screens mAP@0.50 of the evaluations (farm.eval.screens)


def observe(store: Store, sweeps: SweepStore, sweep_id: str, objective: str,
            trials: list[Trial], runs: dict[str, Run], *, reread_maps: bool = False
            ) -> dict[int, Observed]:
    """What every submitted trial has shown so far; reads only what is new. Evaluations
    may land after a run ended (they run on another worker): `reread_maps` reads them
    again for ended trials too (the leaderboard does; ticks only judge running ones)."""
    cached = sweeps.curves(sweep_id)
    changed: dict[int, dict[str, Any]] = {}
    out: dict[int, Observed] = {}
    for trial in trials:
        run = runs.get(trial.run_id or "")
        if not trial.run_id or (run is None and trial.result is None):
            continue
        ended = trial.result is not None or run.state.finished
        rec = cached.get(trial.index) or {"cursor": "-", "loss": {}, "maps": [], "done": False}
        if not rec["done"]:
            rec = _read_new(store, trial.run_id, ended, rec)
            changed[trial.index] = rec
        elif reread_maps:
            rec = {**rec, **_map_points(store, trial.run_id)}
            changed[trial.index] = rec
        live = 0 if ended else int(store.progress.live(trial.run_id).get("iteration") or 0)
        maps = tuple((i, v) for i, v in rec["maps"])
        screens = tuple((i, v) for i, v in rec.get("screens", ()))
        loss = tuple(sorted((i, v) for i, v in rec["loss"].values()))
        curve = {"map50": maps, "screens_map50": screens}.get(objective, loss)
        out[trial.index] = Observed(iteration=live, maps=maps, loss=loss, curve=curve,
                                    screens=screens)
    sweeps.save_curves(sweep_id, changed)
    return out


def _read_new(store: Store, run_id: str, ended: bool, rec: dict[str, Any]) -> dict[str, Any]:
    """`rec` advanced past every metric written so far. A run that had ended before this
    read has written all of them: its record is then final."""
    start = "-" if rec["cursor"] == "-" else "(" + rec["cursor"]
    entries = store.progress.metrics(run_id, start=start)
    loss = dict(rec["loss"])
    for _, m in entries:
        i, v = int(m["i"]), float(m["avg"])
        if not math.isfinite(v):
            continue
        bucket = str(i // STRIDE)
        if bucket not in loss or v < loss[bucket][1]:
            loss[bucket] = [i, v]
    return {"cursor": entries[-1][0] if entries else rec["cursor"], "loss": loss,
            **_map_points(store, run_id), "done": ended}


def _map_points(store: Store, run_id: str) -> dict[str, list]:
    return {"maps": map50_points(store, run_id),
            "screens": screens_map50_points(store, run_id)}


def map50_points(store: Store, run_id: str) -> list[list]:
    """(iteration, mAP@0.50 as a fraction) of the run's evaluations: the farm's when it
    evaluated the run, else the `-map` blocks darknet printed. A mAP printed as nan (no
    detections at all) counts as 0; an evaluation that failed (`error`) does not count."""
    records = [(e.iteration, e.map, e.iou_thresh, e.error)
               for e in store.evaluations.all(run_id)] or \
              [(m.get("iteration"), m.get("map"), m.get("iou_thresh"), None)
               for m in store.progress.maps(run_id)]
    points = []
    for iteration, value, iou, error in records:
        if error or abs(float(iou or 0.5) - 0.5) > 1e-6 or iteration is None:
            continue
        points.append([int(iteration), float(value or 0.0)])
    return points


def screens_map50_points(store: Store, run_id: str) -> list[list]:
    """(iteration, screens mAP@0.50) of the run's evaluations that scored a screens set;
    one that failed on the screens does not count."""
    points = []
    for e in store.evaluations.all(run_id):
        if e.screens and not e.screens.error and e.iteration is not None:
            points.append([int(e.iteration), float(e.screens.map or 0.0)])
    return points
