"""Dataset recipes: a sweep's dataset given as how to make it, not as a finished obj.data.

    base:
      recipe:
        synth:   {n: 96, seed: 1, canvas: [96, 96], mark_px: [14, 30], negatives: 0.05}
        package: {valid_ratio: 0.25, network: [64, 64]}
    parameters:
      synth.negatives: [0.0, 0.2]       # each value is another recipe, so another dataset

`synth` takes every farm.datasets.synth.SynthSpec setting plus `n` (images, 1000 by
default) and `seed` (0); `package` takes `valid_ratio` (0.2), `network` (416x416) and
`seed` (0), as `farm dataset package` does. A trial's recipe is the base recipe with the
trial's `synth.*` / `package.*` parameters applied, written out in full (defaults
included) as canonical JSON; its key is a hash of that text. Trials with the same key
share one dataset, built once (farm.store.recipes.RecipeStore, `build_recipe`).

Values are kept as canonical strings in Param.values and Trial.params like every other
parameter: numbers and words as written ("0.2", "hv"), lists as compact JSON ("[14,30]").
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from farm.darknet.dialect import Dialect
from farm.datasets.synth import spec as synth
from farm.errors import BadInput

if TYPE_CHECKING:
    from farm.datasets.package import PackageResult

#: settings of the recipe's two steps, besides the SynthSpec fields
SYNTH_EXTRA = {"n": 1000, "seed": 0}
PACKAGE_DEFAULTS = {"valid_ratio": 0.2, "network": [416, 416], "seed": 0}
SYNTH_FIELDS = tuple(sorted([f.name for f in fields(synth.SynthSpec)] + list(SYNTH_EXTRA)))
PACKAGE_FIELDS = tuple(sorted(PACKAGE_DEFAULTS))
#: parameter names that change the recipe: "synth.blur", "package.valid_ratio", ...
PARAMETERS = tuple([f"synth.{k}" for k in SYNTH_FIELDS] +
                   [f"package.{k}" for k in PACKAGE_FIELDS])
MAX_IMAGES = 1_000_000
_PATH_FIELDS = {"templates", "backgrounds"}
_TEXT_FIELDS = {"flip", "procedural"}  # words, kept as written in a parameter value
_DEFAULTS = synth.SynthSpec().to_dict()


class RecipeState(str, Enum):
    """Where the build of a recipe's dataset is (the `state` of its build record)."""

    QUEUED = "queued"      # claimed; its message is on the way to an `augment` worker
    BUILDING = "building"  # a worker holds the build's lease
    READY = "ready"        # built: the record names the dataset
    FAILED = "failed"      # could not be built: the record says why

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """No build changes it again (a builder that finds it does nothing)."""
        return self in (RecipeState.READY, RecipeState.FAILED)


def is_recipe_parameter(name: str) -> bool:
    return name.startswith(("synth.", "package."))


def list_valued(name: str) -> bool:
    """Whether one value of the setting is a list ([14, 30]): then a grid of it is a list
    of lists, except for sizes, which may be written "96x96"."""
    step, _, key = name.partition(".")
    default = PACKAGE_DEFAULTS.get(key) if step == "package" else _DEFAULTS.get(key)
    return isinstance(default, list) or key in ("colour_key", "template_classes")


def sized(name: str) -> bool:
    return name.partition(".")[2] in ("canvas", "network")


def numeric_kind(name: str) -> str | None:
    """"int" or "float" for a recipe parameter a range may draw (None: not numeric)."""
    step, _, key = name.partition(".")
    default = (SYNTH_EXTRA.get(key, _DEFAULTS.get(key)) if step == "synth"
               else PACKAGE_DEFAULTS.get(key))
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    return "int" if isinstance(default, int) else "float"


def default_recipe() -> dict[str, dict[str, Any]]:
    plain = {k: _plain(v) for k, v in _DEFAULTS.items()}
    return {"synth": {**plain, **SYNTH_EXTRA}, "package": dict(PACKAGE_DEFAULTS)}


def canonical(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def recipe_key(recipe: dict) -> str:
    """The recipe's content address: "r" and 15 hex digits of sha256(canonical JSON)."""
    return "r" + hashlib.sha256(canonical(recipe).encode()).hexdigest()[:15]


# ---------------------------------------------------------------------------------------
# Values: one setting, as the recipe keeps it


def normalize(name: str, raw: Any, folder: str) -> Any:
    """A recipe setting as the recipe keeps it: sizes as [w, h], paths absolute, numbers
    plain (24.0 is 24, so one dataset is not built twice under two spellings). Raises
    BadInput (no path: the caller knows the line) for what cannot be a value."""
    step, _, key = name.partition(".")
    if raw is None and key not in ("colour_key", "template_classes"):
        raise BadInput(f"{name}: a value is missing", hint=_example(name))
    if key in ("canvas", "network"):
        return _size(name, raw)
    if key in _PATH_FIELDS:
        items = raw if isinstance(raw, list) else [raw]
        out = []
        for item in items:
            full = os.path.normpath(os.path.join(folder, os.path.expanduser(str(item))))
            if not os.path.exists(full):
                raise BadInput(f"{name}: {item} does not exist (looked for {full})",
                               hint="paths in a sweep spec are relative to the spec's folder")
            out.append(full)
        return out
    if key in ("n", "seed"):
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise BadInput(f"{name}: {raw!r} is not a whole number", hint=_example(name))
        low = 1 if key == "n" else 0
        if raw < low:
            raise BadInput(f"{name}: {raw} is below {low}", hint=_example(name))
        if key == "n" and raw > MAX_IMAGES:
            raise BadInput(f"{name}: {raw} images is more than {MAX_IMAGES}",
                           hint="split the data, or package a dataset made by "
                                "`farm dataset synth --workers N`")
        return raw
    if key == "valid_ratio":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw < 1:
            raise BadInput(f"{name}: {raw!r} is not a fraction in (0, 1)", hint=_example(name))
    return _plain(raw)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _size(name: str, raw: Any) -> list[int]:
    preset = synth.CANVAS_PRESETS.get(str(raw).lower()) if isinstance(raw, str) else None
    if preset:
        return list(preset)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return [raw, raw]
    parts = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", raw) if isinstance(raw, str) else None
    if parts:
        return [int(parts.group(1)), int(parts.group(2))]
    if isinstance(raw, list) and len(raw) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw):
        return list(raw)
    raise BadInput(f"{name}: {raw!r} is not a size", hint=_example(name))


def as_param(name: str, value: Any) -> str:
    """The canonical string of a value, as Param.values and Trial.params hold it."""
    if isinstance(value, str) and name.partition(".")[2] in _TEXT_FIELDS:
        return value
    return json.dumps(value, separators=(",", ":"))


def from_param(name: str, text: str) -> Any:
    if name.partition(".")[2] in _TEXT_FIELDS:
        return text
    return json.loads(text)


def _example(name: str) -> str:
    key = name.partition(".")[2]
    return {"n": "e.g. n: 1000 (images)", "seed": "e.g. seed: 0",
            "canvas": "e.g. canvas: [416, 416], 416x416, tile or screen",
            "network": "e.g. network: [416, 416] (the cfg's width and height)",
            "valid_ratio": "e.g. valid_ratio: 0.2",
            "mark_px": "e.g. mark_px: [24, 48]"}.get(key, "see `farm dataset synth --help`")


# ---------------------------------------------------------------------------------------
# Whole recipes


def apply(base: dict, params: dict[str, str]) -> dict:
    """The recipe of a trial: `base` with the trial's recipe parameters set."""
    out = {"synth": dict(base["synth"]), "package": dict(base["package"])}
    for name, text in params.items():
        if is_recipe_parameter(name):
            step, _, key = name.partition(".")
            out[step][key] = from_param(name, text)
    return out


def check(recipe: dict) -> synth.SynthSpec:
    """Refuse a recipe whose synthesis would fail or make wrong data (BadInput, no path)."""
    settings = {k: v for k, v in recipe["synth"].items() if k not in SYNTH_EXTRA}
    spec = synth.SynthSpec.from_dict(settings)
    net = recipe["package"]["network"]
    if min(net) < 32 or any(v % 32 for v in net):
        raise BadInput(f"package.network {net[0]}x{net[1]} is not a darknet network size",
                       hint="multiples of 32, e.g. [416, 416] (the cfg's width and height)")
    return spec


def describe(recipe: dict) -> str:
    s = recipe["synth"]
    w, h = s["canvas"]
    return f"{s['n']} images of {w}x{h}, seed {s['seed']}"


# ---------------------------------------------------------------------------------------
# Building: synthesize, then package (lint included) into the farm's datasets folder


def build(recipe: dict, data_dir: str | os.PathLike, *, dialect: Dialect = Dialect.PJREDDIE,
          on_step: Callable[[str], None] | None = None) -> PackageResult:
    """Make the recipe's dataset in data_dir/datasets/<dataset id>/ (content-addressed:
    an identical dataset already there is reused). The synthesized images go to a
    temporary folder under data_dir/recipes, removed at the end whatever happens."""
    # the image stack (OpenCV, numpy) is imported here: sweeps read recipes without it
    from farm.datasets import package as pkg
    from farm.datasets.synth import load_assets, synthesize
    spec = check(recipe)
    load_assets(spec)  # unreadable templates/backgrounds fail before any image
    s, p = recipe["synth"], recipe["package"]
    work_root = Path(data_dir) / "recipes"
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=recipe_key(recipe) + "-", dir=work_root))
    try:
        if on_step:
            on_step(f"synthesizing {s['n']} images")
        synthesize(spec, work, s["n"], s["seed"])
        if on_step:
            on_step("packaging and linting")
        return pkg.package([str(work)], Path(data_dir) / "datasets",
                           valid_ratio=p["valid_ratio"], seed=p["seed"],
                           network=tuple(p["network"]), dialect=dialect)
    finally:
        shutil.rmtree(work, ignore_errors=True)
