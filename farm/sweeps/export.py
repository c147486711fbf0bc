"""The best trial of a sweep as a folder darknet can use as it is:

    best.cfg       the cfg that produced best.weights: the base cfg with the values of the
                   attempt that wrote them (a restart's rate, burn_in, subdivisions...)
    best.weights   the trial's best weights (the evaluation's best, else the newest good
                   checkpoint: never a file darknet wrote after nan)
    obj.names      the class names
    obj.data       relative paths (classes, names, train/valid lists, backup/)
    train.txt, valid.txt   the lists, with absolute image paths
    result.json    sweep, trial, parameters, objective, mAP (and screens mAP), restarts,
                   sha256 of the weights
    chart.png      the loss/mAP chart of the run's whole lineage (farm.runs.chart)

`cd DIR && darknet detector test obj.data best.cfg best.weights IMAGE` works from there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from farm.darknet.objdata import read_obj_data, resolve, write_obj_data
from farm.errors import BadInput, NotFound
from farm.eval.checkpoints import best_weights_location
from farm.runs import effective, workspace
from farm.runs.model import Run
from farm.store import Store
from farm.sweeps import controller as ctl
from farm.sweeps.progress import map50_points
from farm.sweeps.service import leaderboard_of


def export_best(store: Store, sweep_id: str, out_dir: str | os.PathLike,
                trial: int | None = None, *, here: str = "",
                fetch: Callable[[str, str, Path], None] | None = None) -> Path:
    """Write the bundle of the best trial (or of `trial`) into `out_dir`; returns it.

    `here` is this host's name; weights on another host are copied by `fetch(host,
    path, destination)` (farm.remote over SSH)."""
    sweep, spec, rows = leaderboard_of(store, sweep_id)
    row = _pick(rows, trial, store)
    run = store.runs.load(row.run_id)
    found = best_weights_location(store, run, here)
    if found is None:
        raise NotFound(f"trial {row.trial} ({run.id}) has no weights yet",
                       hint="wait for its first good checkpoint")
    host, weights = found
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if host and host != here and fetch is not None:
        fetch(host, weights, out / "best.weights")
    elif os.path.isfile(weights):
        shutil.copyfile(weights, out / "best.weights")
    else:
        raise NotFound(f"the weights of trial {row.trial} ({run.id}) are on {host or 'another host'}"
                       f": {weights}", hint="give the inventory (FARM_INVENTORY) so the farm "
                       "can fetch them, or export on that host")
    wrote = effective.attempt_for_weights(run, weights) or effective.attempt_at(
        run, _iteration_of(store, run, weights)) or run.current
    workspace.training_cfg(run, wrote.hyper if wrote else {}).save(out / "best.cfg")
    settings = effective.effective_settings(run, wrote)
    if run.origin and run.origin != here and fetch is not None:
        # the dataset is on the training host: its names travel, its lists name files there
        fetch(run.origin, os.path.join(os.path.dirname(run.data), "obj.names"),
              out / "obj.names")
        write_obj_data(out / "obj.data", {"classes": str(len(_names(out / "obj.names"))),
                                          "names": "obj.names", "backup": "backup/"})
        (out / "backup").mkdir(exist_ok=True)
    else:
        _write_data(run, out)
    chart_png = _chart(store, run, out / "chart.png", f"trial {row.trial} ({run.id})")
    maps = map50_points(store, run.id)
    result = {
        "sweep": sweep.id, "trial": row.trial, "run_id": run.id, "params": row.params,
        "overrides": run.overrides,
        "objective": {"name": spec.objective, "value": row.best,
                      "iteration": row.best_iteration},
        "map50": max((m for _, m in maps), default=None),  # None: never evaluated
        "screens_map50": row.screens_map,  # None: no eval.screens, or never scored
        "iterations": row.iterations, "restarts": row.restarts,
        "divergences": row.divergences, "state": row.state,
        "weights_from": weights, "weights_iteration": _iteration_of(store, run, weights),
        "weights_sha256": _sha256(out / "best.weights"),
        "trained_with": settings.to_dict(),  # best.cfg holds these values
        "chart": chart_png.name if chart_png else None,
        "darknet": "darknet detector test obj.data best.cfg best.weights IMAGE",
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return out


def _pick(rows: list[ctl.Row], trial: int | None, store: Store) -> ctl.Row:
    if trial is not None:
        row = next((r for r in rows if r.trial == trial), None)
        if row is None or not row.run_id:
            raise BadInput(f"trial {trial} has no run", hint="`farm sweep show ID` lists them")
        return row
    for row in rows:  # best first; the first that has weights
        if row.run_id and best_weights_location(store, store.runs.load(row.run_id)):
            return row
    raise NotFound("no trial of this sweep has weights yet",
                   hint="wait for a trial to write its first checkpoint")


def _iteration_of(store: Store, run: Run, weights: str) -> int | None:
    best = store.evaluations.best(run.id)
    if best and best.best_weights == weights:
        return best.iteration
    return next((c.iteration for c in run.checkpoints if c.path == weights), None)


def _write_data(run: Run, out: Path) -> None:
    values = read_obj_data(run.data)
    data_dir = os.path.dirname(run.data)
    rel = {"classes": values.get("classes", "1")}
    names = resolve(values["names"], run.base_dir, data_dir) if "names" in values else ""
    if names and os.path.isfile(names):
        shutil.copyfile(names, out / "obj.names")
        rel["names"] = "obj.names"
    for key in ("train", "valid"):
        src = resolve(values[key], run.base_dir, data_dir) if key in values else ""
        if src and os.path.isfile(src):
            workspace.write_absolute_list(src, out / f"{key}.txt", run.base_dir)
            rel[key] = f"{key}.txt"
    (out / "backup").mkdir(exist_ok=True)
    rel["backup"] = "backup/"
    write_obj_data(out / "obj.data", rel)


def _names(path: Path) -> list[str]:
    return [n for n in path.read_text().splitlines() if n.strip()]


def _chart(store: Store, run: Run, path: Path, title: str) -> Path | None:
    """The run's chart over its whole lineage (farm.plot.runchart), when it is installed."""
    try:
        from farm.plot import runchart
    except ImportError:
        return None
    drawing = runchart.for_run(store, run, title=title)
    path.write_bytes(runchart.draw(drawing, runchart.PNG_SIZE).to_png())
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
