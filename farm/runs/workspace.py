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
from farm.darknet.dialect import Dialect
from farm.darknet.objdata import read_obj_data, resolve, write_obj_data
from farm.errors import BadInput, Finding, FindingsError, Severity
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
    """The base cfg with the run's overrides and this attempt's values. `random` is a key
    of the detection layers (darknet reads it from the last one); a value that differs
    from the base cfg's is written into every one of them."""
    cfg = _base_cfg(run)
    values = {**run.overrides, **hyper}
    random = values.pop("random", None)
    for key, value in values.items():
        cfg.set_net(key, value)
    heads = cfg.output_layers()
    if random is not None and heads and heads[-1].get("random", "0") != random:
        for head in heads:
            head.set("random", random)
    return cfg


def _base_cfg(run: Run) -> Cfg:
    return Cfg.parse(run.cfg_text, run.cfg) if run.cfg_text is not None else Cfg.load(run.cfg)


def base_hyper(run: Run) -> dict[str, str]:
    """The values a restart may change (farm.runs.effective.MANAGED), as the run asks for
    them: the base cfg with its overrides, darknet's defaults where a key is absent."""
    cfg = training_cfg(run, {})
    heads = cfg.output_layers()
    defaults = {"learning_rate": "0.001", "batch": "1", "subdivisions": "1", "burn_in": "0",
                "power": "4", "policy": "constant"}
    out = {k: cfg.net_get(k, v) for k, v in defaults.items()}
    for key in ("width", "height", "steps", "scales"):
        if cfg.net_get(key) is not None:
            out[key] = cfg.net_get(key)
    if heads:
        out["random"] = heads[-1].get("random", "0")
    return out


def preflight(run: Run, dialect: Dialect, limit: checks.MemoryLimit | None = None) -> None:
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


def prepare_attempt(run: Run, runs_dir: Path, number: int, hyper: dict[str, str],
                    data_extra: dict[str, str] | None = None) -> tuple[Path, Path, Cfg]:
    """The attempt's directory, its obj.data (with `data_extra`, e.g. AlexeyAB's
    savelast=) and its cfg, written and ready for darknet."""
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
    values.update(data_extra or {})
    write_obj_data(workdir / "obj.data", values)
    cfg = training_cfg(run, hyper)
    cfg.save(workdir / CFG_NAME)
    return workdir, workdir / "obj.data", cfg


def findings_message(e: FindingsError | BadInput) -> str:
    """One line for the attempt record: what, where, and the fix."""
    if isinstance(e, FindingsError):
        errors = [f for f in e.findings if f.severity is Severity.ERROR]
        first: Finding = errors[0] if errors else e.findings[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{first}{more}"
    return str(e)
