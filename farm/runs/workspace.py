"""The files of a run on the host that trains it.

    <data_dir>/runs/<run>/inputs/          train.txt, valid.txt, obj.names with absolute paths
    <data_dir>/runs/<run>/attempt-N/       darknet's cwd: obj.data, net.cfg, darknet.log, backup/
    <data_dir>/runs/<run>/checkpoints/     the farm's copies of finite checkpoints

Every path is derived from (data_dir, run id, attempt number), so another host can name
and fetch any of these files later.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from farm.darknet.cfg import Cfg
from farm.darknet.objdata import read_obj_data, resolve, write_obj_data
from farm.errors import BadInput, Finding, FindingsError
from farm.runs import checks
from farm.runs.model import Run

#: The attempt's cfg. No dot in the stem: darknet names weights after the cfg's base name
#: cut at the first dot (`net_100.weights`, `net_final.weights`).
CFG_NAME = "net.cfg"
WEIGHTS_BASE = "net"


def run_dir(runs_dir: Path, run_id: str) -> Path:
    return Path(runs_dir) / run_id


def attempt_dir(runs_dir: Path, run_id: str, number: int) -> Path:
    return run_dir(runs_dir, run_id) / f"attempt-{number}"


def checkpoints_dir(runs_dir: Path, run_id: str) -> Path:
    return run_dir(runs_dir, run_id) / "checkpoints"


def training_cfg(run: Run, hyper: dict[str, str]) -> Cfg:
    """The base cfg with the run's overrides and this attempt's hyperparameters."""
    cfg = _base_cfg(run)
    for key, value in {**run.overrides, **hyper}.items():
        cfg.set_net(key, value)
    return cfg


def _base_cfg(run: Run) -> Cfg:
    return Cfg.parse(run.cfg_text, run.cfg) if run.cfg_text is not None else Cfg.load(run.cfg)


def base_hyper(run: Run) -> dict[str, str]:
    """The values the policy may change, as the first attempt trains with them."""
    cfg = training_cfg(run, {})
    return {"learning_rate": cfg.net_get("learning_rate", "0.001"),
            "burn_in": cfg.net_get("burn_in", "0")}


def preflight(run: Run, dialect: str, limit: checks.MemoryLimit | None = None) -> None:
    """Refuse bad cfgs, start weights and datasets before darknet spends a second on
    them: the checks `farm train` ran at submit, again here (files change meanwhile),
    with this worker's dialect and memory `limit`."""
    cfg, place = checks.with_overrides(_base_cfg(run), run.overrides)
    checks.check_training(data=run.data, cfg=cfg, weights=run.weights, dialect=dialect,
                          base_dir=run.base_dir, limit=limit, reader=dialect, place=place)


def write_absolute_list(src: str, dst: Path, base_dir: str) -> None:
    """A copy of the image list `src` with every entry absolute and blank lines dropped."""
    fallback = os.path.dirname(src)
    with open(src, encoding="utf-8-sig", errors="replace") as f, open(dst, "w") as out:
        for line in f:
            entry = line.strip()
            if entry:
                out.write(resolve(entry, base_dir, fallback) + "\n")


def write_inputs(run: Run, runs_dir: Path) -> None:
    """Absolute copies of the run's lists and names in `inputs/` (darknet resolves
    relative paths against its cwd, and each attempt has a cwd of its own)."""
    values = read_obj_data(run.data)
    data_dir = os.path.dirname(run.data)
    inputs = run_dir(runs_dir, run.id) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    if "train" not in values:
        raise BadInput("obj.data has no train= line", path=run.data,
                       hint="add `train = path/to/train.txt`")
    for key in ("train", "valid"):
        if key in values:
            src = resolve(values[key], run.base_dir, data_dir)
            if not os.path.isfile(src):
                raise BadInput(f"{key} list {src} does not exist", path=run.data)
            write_absolute_list(src, inputs / f"{key}.txt", run.base_dir)
    names = resolve(values.get("names", ""), run.base_dir, data_dir) if "names" in values else ""
    if names and os.path.isfile(names):
        shutil.copyfile(names, inputs / "obj.names")


def prepare_attempt(run: Run, runs_dir: Path, number: int, hyper: dict[str, str]
                    ) -> tuple[Path, Path, Cfg]:
    """The attempt's directory, its obj.data and its cfg, written and ready for darknet."""
    workdir = attempt_dir(runs_dir, run.id, number)
    if workdir.exists():  # a lost attempt of the same number never finished: start clean
        shutil.rmtree(workdir)
    (workdir / "backup").mkdir(parents=True)
    inputs = run_dir(runs_dir, run.id) / "inputs"
    values = {"classes": read_obj_data(run.data).get("classes", "1"),
              "train": str(inputs / "train.txt")}
    if (inputs / "valid.txt").exists():
        values["valid"] = str(inputs / "valid.txt")
    if (inputs / "obj.names").exists():
        values["names"] = str(inputs / "obj.names")
    values["backup"] = str(workdir / "backup")
    write_obj_data(workdir / "obj.data", values)
    cfg = training_cfg(run, hyper)
    cfg.save(workdir / CFG_NAME)
    return workdir, workdir / "obj.data", cfg


def findings_message(e: FindingsError | BadInput) -> str:
    """One line for the attempt record: what, where, and the fix."""
    if isinstance(e, FindingsError):
        errors = [f for f in e.findings if f.severity == "error"]
        first: Finding = errors[0] if errors else e.findings[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{first}{more}"
    return str(e)
