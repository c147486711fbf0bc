"""`farm gc`: reclaim the disk space of what the farm no longer needs, while it runs.

What goes (each item listed with its bytes; a dry run removes nothing):

- of finished runs (completed, failed, cancelled): darknet's files in every attempt's
  backup/, checkpoints beyond what retention keeps, pins whose evaluation is recorded
  (farm.runs.retention: the same rules a run follows as it trains, for runs that
  trained before retention or with it off);
- datasets built from a recipe (farm.datasets.recipe) that no active sweep and no
  unfinished run uses, and no pending evaluation reads. The recipe's record is made
  unbuilt first, so a sweep submitted later builds it again rather than train on a
  folder that is going; the uses are then looked at again, and the folder is renamed
  aside before it is deleted (a rebuild meanwhile lands in a fresh folder);
- leftovers of work cut short, untouched for gc_stale_after seconds: fetch staging
  folders (datasets/.fetch-*), packaging ones (datasets/.tmp-package-*), recipe work
  folders (recipes/*) whose build holds no lease, `.part` files, evaluation temp files.

Never touched: queued or running runs (each run's state is read again just before its
files go), runs this farm's Redis does not know, best.weights, logs, cfgs, the kept
checkpoints, pinned checkpoints still waiting for an evaluation (maybe on another
host), datasets that are not a recipe's.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from farm.errors import NotFound
from farm.runs.model import Run
from farm.runs.retention import Waste, run_waste
from farm.settings import Settings
from farm.store import Store

#: Temporary files of an evaluation in a run's eval/ (farm.eval.checkpoints), by prefix.
EVAL_TEMPS = (".best-", ".obj-")


@dataclass
class Result:
    items: list[Waste] = field(default_factory=list)   # removed (or, dry run, would be)
    notes: list[str] = field(default_factory=list)     # what was left alone, and why
    freed: int = 0                                      # bytes removed

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)


def collect(store: Store, settings: Settings, *, dry_run: bool, keep: int | None = None,
            now: Callable[[], float] = time.time,
            on_item: Callable[[Waste], None] = lambda item: None) -> Result:
    """Find (and unless `dry_run`, remove) what the farm no longer needs; see above.
    `keep`: good checkpoints kept beside the newest (default: settings.keep_checkpoints).
    `on_item` hears of each item as it goes."""
    keep = settings.keep_checkpoints if keep is None else keep
    res = Result()
    stale_before = now() - settings.gc_stale_after

    def take(items: list[Waste]) -> None:
        for item in _once_per_inode(items):
            res.items.append(item)
            on_item(item)
            if not dry_run:
                res.freed += _drop(item)

    runs_dir = Path(settings.runs_dir)
    for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else ():
        if folder.is_dir():
            _run(store, folder, keep, stale_before, dry_run, res, take)
    _recipes(store, settings, dry_run, res, take)
    take(_leftovers(store, Path(settings.data_dir), stale_before))
    return res


def _run(store: Store, folder: Path, keep: int, stale_before: float, dry_run: bool,
         res: Result, take: Callable[[list[Waste]], None]) -> None:
    try:
        run = store.runs.load(folder.name)
    except NotFound:
        res.notes.append(f"{folder}: no run {folder.name} in this farm's Redis; left alone")
        return
    if not run.state.finished:
        return
    evaluated = {e.iteration for e in store.evaluations.all(run.id)}
    items = run_waste(run, folder, keep, evaluated)
    items += [Waste(p, _tree_bytes(p), "a temporary file of a cut evaluation or copy")
              for p in _temps(folder) if _newest(p) < stale_before]
    if not dry_run and not store.runs.load(run.id).state.finished:
        return  # queued again meanwhile: its files are its own again
    waiting = len(list((folder / "eval" / "queue").glob("iter-*.weights"))) - sum(
        1 for i in items if i.path.parent == folder / "eval" / "queue")
    if waiting > 0:
        res.notes.append(f"{folder}: {waiting} pinned checkpoint(s) wait for an evaluation; "
                         "kept")
    take(items)


def _temps(folder: Path) -> list[Path]:
    evals = folder / "eval"
    out = [p for p in evals.iterdir() if p.name.startswith(EVAL_TEMPS)] \
        if evals.is_dir() else []
    return out + [p for p in (evals / "queue").glob("*.part")]


def _recipes(store: Store, settings: Settings, dry_run: bool, res: Result,
             take: Callable[[list[Waste]], None]) -> None:
    """Recipe datasets nothing uses any more (see the module's docstring)."""
    recipes = store.recipes
    built = recipes.built()
    if not built:
        return
    root = Path(settings.data_dir) / "datasets"
    runs = _all_runs(store)
    for key, rec in sorted(built.items()):
        folder = root / rec.get("dataset_id", "")
        if not rec.get("dataset_id") or not (folder / "obj.data").is_file():
            continue  # built on another host, or gone already
        user = _user(store, key, folder, runs)
        if user:
            res.notes.append(f"{folder}: dataset of recipe {key}, used by {user}; kept")
            continue
        item = Waste(folder, _tree_bytes(folder), f"dataset of recipe {key}, used by no "
                                                  f"active sweep or unfinished run")
        if dry_run:
            take([item])
            continue
        dropped = recipes.forget(key, rec["dataset_id"])
        if dropped is None:
            continue  # rebuilt or changed meanwhile
        user = _user(store, key, folder, _all_runs(store))
        if user:  # a sweep took it up between the two looks
            recipes.restore(key, dropped)
            res.notes.append(f"{folder}: dataset of recipe {key}, used by {user}; kept")
            continue
        take([item])


def _user(store: Store, key: str, folder: Path, runs: list[Run]) -> str | None:
    """What still needs the dataset in `folder` (of recipe `key`): an active sweep with a
    trial of that recipe, an unfinished run training on it, or a finished one whose
    evaluation is pending (it reads the valid list); None when nothing does."""
    sweeps = store.sweeps
    for sweep_id in sweeps.active_ids():
        if any(t.recipe_key == key for t in sweeps.trials(sweep_id)):
            return f"active sweep {sweep_id}"
    inside = str(folder) + os.sep
    for run in runs:
        if not (run.data or "").startswith(inside):
            continue
        if not run.state.finished:
            return f"{run.state.value} run {run.id}"
        if store.evaluations.pending(run.id):
            return f"the pending evaluations of run {run.id}"
    return None


def _all_runs(store: Store) -> list[Run]:
    return store.runs.recent(limit=1 << 40)


def _leftovers(store: Store, data_dir: Path, stale_before: float) -> list[Waste]:
    """Work cut short and untouched since `stale_before` (see the module's docstring)."""
    out: list[Waste] = []
    datasets = data_dir / "datasets"
    for p in sorted(datasets.glob(".gc-*")):  # a gc stopped between rename and delete
        out.append(Waste(p, _tree_bytes(p), "a dataset a previous gc set aside"))
    for pattern, why in ((".fetch-*", "a fetch cut short"),
                         (".tmp-package-*", "a packaging cut short")):
        out += [Waste(p, _tree_bytes(p), why) for p in sorted(datasets.glob(pattern))
                if _newest(p) < stale_before]
    recipes = store.recipes
    for p in sorted((data_dir / "recipes").glob("*-*")):
        if _newest(p) < stale_before and not recipes.load(p.name.split("-", 1)[0]).get("lease"):
            out.append(Waste(p, _tree_bytes(p), "a recipe build's work folder, cut short"))
    for top in ("weights", "datasets"):  # pulled files: `.part` until their sha256 matched
        for p in sorted((data_dir / top).glob("*.part")):
            if _newest(p) < stale_before:
                out.append(Waste(p, _tree_bytes(p), "a transfer cut short"))
    return out


def _once_per_inode(items: list[Waste]) -> list[Waste]:
    """The items with each file's bytes counted where removing it frees them: a file
    with hard links elsewhere (a pin shares its checkpoint's data) frees nothing unless
    every one of its links is among the items, and then once."""
    links: dict[tuple[int, int], list[int]] = {}
    nlink: dict[tuple[int, int], int] = {}
    for i, item in enumerate(items):
        try:
            st = item.path.lstat()
        except FileNotFoundError:
            continue
        if not item.path.is_dir() and st.st_nlink > 1:
            links.setdefault((st.st_dev, st.st_ino), []).append(i)
            nlink[(st.st_dev, st.st_ino)] = st.st_nlink
    out = list(items)
    for inode, where in links.items():
        whole = len(where) >= nlink[inode]
        for n, i in enumerate(where):
            if n or not whole:
                out[i] = Waste(items[i].path, 0, items[i].why + " (a hard link: frees "
                                                                "nothing by itself)")
    return out


def _drop(item: Waste) -> int:
    """Remove a file, or a folder (renamed aside first: a writer that comes back finds
    nothing half-deleted); the bytes freed."""
    path = item.path
    try:
        if path.is_dir() and not path.is_symlink():
            aside = path if path.name.startswith(".gc-") else \
                path.with_name(f".gc-{path.name}-{uuid.uuid4().hex[:6]}")
            os.rename(path, aside)
            shutil.rmtree(aside)
        else:
            os.remove(path)
    except FileNotFoundError:
        return 0
    return item.bytes


def _newest(path: Path) -> float:
    """The newest mtime in a file or folder tree (a transfer in progress keeps it fresh)."""
    try:
        newest = path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone: nothing to do
    if path.is_dir():
        for base, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def _tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (hard links counted once each)."""
    try:
        if not path.is_dir():
            return path.stat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except FileNotFoundError:
                pass
    return total
