"""The acceptance run: from a folder of labelled screenshots to a bundle, judged on
screenshots the training never saw (`farm acceptance`, run by hand on a GPU host).

1. split the labelled screenshots (labelImg XML, or YOLO labels) into train and
   held-out screens, by a hash of each name (the same split every time), and package
   both as screens sets (farm.datasets.screens);
2. synthesize training tiles from the train screens only (farm.datasets.synth.fromscreens:
   their backgrounds, their marks, their mark sizes) at the network's size, and package
   them (farm.datasets.package);
3. write a small sweep (learning rates) ranked by the held-out screens mAP
   (objective screens_map50, eval.screens = the held-out set) for the caller to submit;
4. report: the best held-out screens mAP, the GPU-hours the sweep used (each trial's
   training wall time: one GPU each), their ratio, every trial's figures.

Nothing here talks to Celery; the command (workers/cli/acceptance.py) submits the sweep,
waits for it and exports the best trial with `farm sweep export`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from farm.darknet.cfg import Cfg
from farm.darknet.dialect import Dialect
from farm.datasets.synth.fromscreens import (ScreenSynthSpec, size_report, synthesize_from_screens,
                                       write_sheet)
from farm.datasets.package import package
from farm.datasets.screens import is_labelimg, open_screens, package_screens
from farm.datasets.tile import iter_images, label_for
from farm.runs.effective import trained_note
from farm.datasets.voc import import_voc, read_names
from farm.errors import BadInput

#: held-out share of the screenshots when none is given
HELD_OUT = 0.25


@dataclass
class Plan:
    """What the acceptance run built, and the sweep to submit."""

    out: str
    train_screens: str      # screens set (folder) of the train screenshots
    held_screens: str       # screens set (folder) of the held-out screenshots
    dataset: str            # obj.data of the synthesized, packaged training tiles
    spec: str               # the sweep spec written for it
    train_count: int
    held_count: int
    measured: dict          # the train marks' size distribution (fromscreens.size_report)

    def to_dict(self) -> dict:
        return asdict(self)


def prepare(labelled: str | os.PathLike, *, names: str | os.PathLike, out: str | os.PathLike,
            cfg: str | os.PathLike, datasets_root: str | os.PathLike,
            weights: str | os.PathLike | None = None, held_out: float = HELD_OUT,
            images: int = 3000, learning_rates: tuple[float, ...] = (0.001, 0.002),
            iterations: int = 2000, eval_every: int = 500, concurrency: int = 1,
            sets: dict[str, str] | None = None, seed: int = 0,
            dialect: Dialect = Dialect.PJREDDIE,
            say: Callable[[str], None] = lambda text: None) -> Plan:
    """Steps 1-3 of the module docstring; `say` hears what is being done."""
    out = Path(out).resolve()
    if not 0 < held_out < 1:
        raise BadInput(f"held-out share {held_out} is not in (0, 1)", hint="e.g. 0.25")
    if not learning_rates:
        raise BadInput("no learning rate to try", hint="give --learning-rate at least once")
    net = Cfg.load(cfg)
    network = (int(net.width or 0), int(net.height or 0))
    if min(network) < 32:
        raise BadInput("the cfg has no usable width/height in [net]", path=str(cfg),
                       hint="the network size is the synthesized tiles' size")
    out.mkdir(parents=True, exist_ok=True)
    classes = read_names(names)
    say(f"splitting {labelled} into train and held-out screenshots ({held_out:.0%} held out)")
    train_dir, held_dir, counts = split(labelled, classes, out / "split", held_out, seed)
    train = package_screens([train_dir], datasets_root, names=classes, dialect=dialect)
    held = package_screens([held_dir], datasets_root, names=classes, dialect=dialect)
    train_set = open_screens(train.path)
    say(f"screens sets: train {train.dataset_id} ({counts[0]} screens), held-out "
        f"{held.dataset_id} ({counts[1]} screens)")
    synth_dir = out / "synth"
    if synth_dir.exists():
        shutil.rmtree(synth_dir)  # a rerun draws afresh: no leftovers of another split
    say(f"synthesizing {images} tiles of {network[0]}x{network[1]} from the train screens")
    prep = synthesize_from_screens(train_set, synth_dir, images, seed,
                                   ScreenSynthSpec(canvas=network))
    say(f"contact sheet: {write_sheet(synth_dir, prep, images, network)}")
    made = package([synth_dir], datasets_root, names=classes, valid_ratio=0.2, seed=seed,
                   network=network, dialect=dialect)
    dataset = str(Path(made.path) / "obj.data")
    say(f"training dataset {made.dataset_id}: {made.train} train, {made.valid} valid tiles")
    spec_path = out / "sweep.yaml"
    spec_path.write_text(_spec_text(dataset, cfg, weights, held.path, learning_rates,
                                    iterations, eval_every, concurrency, sets or {}))
    plan = Plan(str(out), train.path, held.path, dataset, str(spec_path), counts[0], counts[1],
                size_report(prep.sizes))
    (out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1) + "\n")
    return plan


def split(labelled: str | os.PathLike, classes: list[str], into: Path, held_out: float,
          seed: int) -> tuple[Path, Path, tuple[int, int]]:
    """The labelled screenshots as two labelled folders (hard links: nothing is copied),
    train and held-out; each screenshot's side is a hash of (seed, its name), and each
    side gets at least one."""
    src = Path(labelled)
    if not src.is_dir():
        raise BadInput("the folder of labelled screenshots does not exist", path=str(src),
                       hint="give the labelImg folder (images with their .xml)")
    if into.exists():
        shutil.rmtree(into)
    if is_labelimg(src):
        import_voc(src, classes, into / "all")
        src = into / "all"
    images = sorted(iter_images(src))
    if len(images) < 2:
        raise BadInput(f"{len(images)} labelled screenshot(s): at least 2 are needed (one to "
                       "train from, one to judge on)", path=str(labelled),
                       hint="label more screenshots")
    score = {p: _hash(seed, p.name) for p in images}
    held = {p for p in images if score[p] < held_out}
    if not held:
        held = {min(images, key=score.get)}
    if len(held) == len(images):
        held.discard(max(images, key=score.get))
    for side, chosen in (("train", [p for p in images if p not in held]),
                         ("held", [p for p in images if p in held])):
        folder = into / side
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        (folder / "obj.names").write_text("".join(f"{c}\n" for c in classes))
        for p in chosen:
            _link(p, folder / "images" / p.name)
            _link(label_for(p, src), folder / "labels" / f"{p.stem}.txt")
    return into / "train", into / "held", (len(images) - len(held), len(held))


def _hash(seed: int, name: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _link(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise BadInput("a screenshot has no label file", path=str(src),
                       hint="label it (an empty file for a screen without a mark)")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _spec_text(dataset, cfg, weights, held, learning_rates, iterations, eval_every,
               concurrency, sets) -> str:
    base = {"data": dataset, "cfg": str(Path(cfg).resolve())}
    if weights:
        base["weights"] = str(Path(weights).resolve())
    if sets:
        base["set"] = dict(sets)
    spec = {"name": "acceptance", "base": base,
            "parameters": {"learning_rate": [float(v) for v in learning_rates]},
            "concurrency": concurrency, "budget": {"iterations": iterations},
            "objective": "screens_map50", "eval": {"screens": held},
            "eval_every": eval_every}
    return "# written by `farm acceptance`\n" + json.dumps(spec, indent=1) + "\n"


# --------------------------------------------------------------------------- the report

def report(plan: Plan, sweep: dict, rows: list[dict]) -> dict:
    """The figures of the run: `sweep` and `rows` as `farm sweep show --json` gives them."""
    trials = []
    hours = 0.0
    for r in rows:
        wall = r.get("wall_time") or 0.0
        hours += wall / 3600
        trials.append({"trial": r["trial"], "run_id": r["run_id"], "params": r["params"],
                       "state": r["state"], "screens_map50": r.get("screens_map"),
                       "tile_map50": r.get("tile_map"), "gpu_hours": wall / 3600,
                       "iterations": r["iterations"], "restarts": r["restarts"],
                       "trained_with": _trained_with(r), "note": r.get("note", "")})
    ranked = [r for r in rows if r.get("rank")]
    best = ranked[0] if ranked else None
    value = best.get("screens_map") if best else None
    return {"sweep": sweep["id"], "state": sweep["state"], "plan": plan.to_dict(),
            "best": None if best is None else {
                "trial": best["trial"], "run_id": best["run_id"], "params": best["params"],
                "trained_with": _trained_with(best), "held_out_screens_map50": value,
                "tile_map50": best.get("tile_map"),
                "iteration": best.get("best_iteration")},
            "gpu_hours": hours,
            "held_out_screens_map50_per_gpu_hour": (value / hours) if value is not None
            and hours > 0 else None,
            "trials": trials}


def format_report(r: dict) -> list[str]:
    plan = r["plan"]
    q = plan["measured"]["long_side_px"] or {}
    lines = [f"screens: {plan['train_count']} to train from, {plan['held_count']} held out; "
             f"marks {q.get('min', '-')}-{q.get('max', '-')} px (median {q.get('median', '-')})",
             f"sweep {r['sweep']}: {r['state']}, {len(r['trials'])} trials, "
             f"{r['gpu_hours']:.3f} GPU-hours"]
    for t in r["trials"]:
        lines.append(f"  trial {t['trial']} {t['state']:<10} "
                     f"{' '.join(f'{k}={v}' for k, v in t['params'].items())}: held-out screens "
                     f"mAP {_pct(t['screens_map50'])}, tile mAP {_pct(t['tile_map50'])}, "
                     f"{t['gpu_hours']:.3f} GPU-h" + _trained_note(t.get("trained_with"))
                     + (f"\n    {t['note']}" if t["note"] and t["state"] != "completed" else ""))
    best = r["best"]
    if best is None:
        lines.append("no trial has a held-out screens mAP")
    else:
        per = r["held_out_screens_map50_per_gpu_hour"]
        exported = best.get("weights_iteration")
        lines.append(f"best: trial {best['trial']} ({best['run_id']}"
                     f"{_trained_note(best.get('trained_with'))}): held-out screens mAP "
                     f"{_pct(best['held_out_screens_map50'])} (tile mAP "
                     f"{_pct(best['tile_map50'])}), first at iteration {best['iteration']}"
                     + (f", bundle weights of iteration {exported}" if exported is not None
                        else "") + "; "
                     + (f"{per * 100:.2f} mAP points per GPU-hour" if per is not None
                        else "GPU-hours unknown"))
    return lines


def _trained_with(row: dict) -> str:
    """What the trial's best weights were really trained with, in words (a restart may
    have lowered its learning rate: the row's params are what was asked)."""
    return (row.get("settings") or {}).get("text") or "as requested"


def _trained_note(text: str | None) -> str:
    note = trained_note({"text": text})
    return f"  {note}" if note else ""


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f} %"
