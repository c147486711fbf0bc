"""Reading a sweep spec: every section checked at its line (YamlDoc), every problem a
BadInput with `spec.yaml:LINE` and what to write instead."""
from __future__ import annotations

import itertools
import math
import os
import posixpath
import re
from typing import Any

from farm.darknet.cfg import NET_KEYS, validate_net_overrides
from farm.datasets import recipe as rcp
from farm.errors import BadInput
from farm.runs.policy import Policy
from farm.settings import EVAL_EVERY, Settings
from farm.sweeps.spec.model import (JOINT, MAX_TRIALS, OBJECTIVES, PARAMETERS, RANGES, Budget,
                                    EarlyStopping, MedianRule, Param, SweepSpec)
from farm.sweeps.yamldoc import YamlDoc, closest

_PARAMETERS_HINT = ("parameters are [net] keys (learning_rate, burn_in, momentum, "
                    "max_batches, ...), batch/subdivisions, width/height, cfg, or with "
                    "base.recipe synth.<setting> and package.<setting>")
_TOP = ("name", "base", "search", "parameters", "trials", "seed", "concurrency", "queue",
        "budget", "objective", "early_stopping", "policy", "eval_every", "eval")
_BASE = ("data", "cfg", "weights", "set", "recipe")
_RECIPE = ("synth", "package")
#: combinations of recipe values checked as whole recipes before anything is built
MAX_RECIPE_CHECKS = 1000
_BUDGET = ("iterations", "wall_time")
_EARLY = ("zero_map_after", "median")
_MEDIAN = ("grace", "min_trials")
_EVAL = ("screens",)


# ---------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | os.PathLike) -> SweepSpec:
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadInput(f"cannot read the sweep spec: {e.strerror}", path=path,
                       hint="give the path of a sweep YAML file") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: str) -> SweepSpec:
    doc = YamlDoc(text, path)
    top = doc.mapping((), _TOP, required=True)
    base = doc.mapping(("base",), _BASE, required=True)
    recipe = _recipe(doc, base)
    params = _parameters(doc, recipe)
    if recipe is not None:
        _check_recipes(doc, recipe, params)
    budget = _budget(doc)
    search = _search(doc, params)
    cfg_choice = any(p.name == "cfg" for p in params)
    if "cfg" in base and cfg_choice:
        raise doc.error(("base", "cfg"), "base.cfg and parameters.cfg both choose the cfg",
                        "keep one of them")
    fixed = _fixed(doc, params, budget)
    _check_max_batches(doc, params, budget)
    return SweepSpec(
        path=path, name=str(top.get("name") or ""),
        data=None if recipe is not None else doc.file(("base", "data"), "obj.data"),
        recipe=recipe,
        cfg=None if cfg_choice else doc.file(("base", "cfg"), "base cfg", required=True),
        weights=doc.file(("base", "weights"), "start weights file"),
        fixed=fixed, parameters=params, search=search,
        trials=_trials(doc, search, params),
        seed=doc.integer(("seed",), default=0, minimum=None),
        concurrency=doc.integer(("concurrency",), default=1, minimum=1),
        queue=_queue(doc), budget=budget, objective=_objective(doc),
        early_stopping=_early_stopping(doc), policy=_policy(doc),
        eval_every=doc.integer(("eval_every",), default=EVAL_EVERY, minimum=1),
        eval_screens=_eval_screens(doc),
        lines={k: doc.line(w) for k, w in (
            ("eval_every", ("eval_every",)),
            ("zero_map_after", ("early_stopping", "zero_map_after")),
            ("grace", ("early_stopping", "median", "grace"))) if doc.line(w)})


# ---------------------------------------------------------------------------------------
# Sections


def _recipe(doc: YamlDoc, base: dict) -> dict[str, Any] | None:
    """base.recipe in full (defaults filled in), each setting checked at its line; or
    None when base.data names the dataset."""
    if "recipe" not in base:
        if "data" not in base:
            raise doc.error(("base",), "base needs the dataset: data: (an obj.data) or "
                                       "recipe: (synthesis and packaging settings)",
                            "e.g. `data: ds/obj.data`, or `recipe: {synth: {n: 1000}}`")
        return None
    if "data" in base:
        raise doc.error(("base", "recipe"), "base.data and base.recipe both give the "
                                            "dataset", "keep one of them: data: names a "
                                                       "built obj.data, recipe: makes one")
    doc.mapping(("base", "recipe"), _RECIPE, required=True)
    recipe = rcp.default_recipe()
    for step, known in (("synth", rcp.SYNTH_FIELDS), ("package", rcp.PACKAGE_FIELDS)):
        for key, raw in doc.mapping(("base", "recipe", step), known).items():
            where = ("base", "recipe", step, key)
            try:
                recipe[step][key] = rcp.normalize(f"{step}.{key}", raw, doc.folder)
            except BadInput as e:
                raise doc.error(where, f"base.recipe.{e.reason}", e.hint) from None
    try:
        rcp.check(recipe)
    except BadInput as e:
        given = [(step, k) for step in _RECIPE for k in (doc.get(("base", "recipe", step))
                                                         or {})]
        named = [w for w in given if re.search(rf"\b{re.escape(w[1])}\b", e.reason)]
        where = ("base", "recipe") + (named[0] if len(named) == 1 else ())
        raise doc.error(where, f"base.recipe: {e.reason}", e.hint) from None
    return recipe


def _check_recipes(doc: YamlDoc, recipe: dict, params: tuple[Param, ...]) -> None:
    """Every combination of recipe values (range ends for ranges) as a whole recipe, so
    settings that only clash together (mark_px too big for a canvas) fail here, at the
    first recipe parameter's line, not in a build hours later."""
    varied = [p for p in params if rcp.is_recipe_parameter(p.name)]
    if not varied:
        return
    options = [p.values or tuple(_fmt_kind(p, x) for x in (p.low, p.high)) for p in varied]
    for n, combo in enumerate(itertools.product(*options)):
        if n >= MAX_RECIPE_CHECKS:
            return
        chosen = dict(zip((p.name for p in varied), combo))
        try:
            rcp.check(rcp.apply(recipe, chosen))
        except BadInput as e:
            what = " ".join(f"{k}={v}" for k, v in chosen.items())
            raise doc.error(("parameters", varied[0].name),
                            f"the recipe of trials with {what} is refused: {e.reason}",
                            e.hint) from None


def _fmt_kind(p: Param, x: float) -> str:
    return str(round(x)) if rcp.numeric_kind(p.name) == "int" else _fmt(x)


def _parameters(doc: YamlDoc, recipe: dict | None) -> tuple[Param, ...]:
    raw = doc.mapping(("parameters",), None)
    if not raw:
        raise doc.error(("parameters",) if "parameters" in doc.data else (),
                        "the sweep has no parameters",
                        "add e.g. `parameters: {learning_rate: [0.001, 0.002]}`")
    return tuple(_param(doc, str(name), value, recipe) for name, value in raw.items())


def _param(doc: YamlDoc, name: str, raw: Any, recipe: dict | None = None) -> Param:
    where = ("parameters", name)
    if rcp.is_recipe_parameter(name):
        return _recipe_param(doc, name, raw, recipe)
    if name not in PARAMETERS:
        raise doc.error(where, f"unknown parameter {name!r}: not a [net] key darknet reads "
                               f"nor one of {', '.join(sorted(JOINT))}, cfg",
                        closest(name, PARAMETERS + (list(rcp.PARAMETERS) if "." in name
                                                    else []), _PARAMETERS_HINT))
    if isinstance(raw, dict):
        return _range(doc, name, raw)
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise doc.error(where, f"parameter {name}: the grid is empty",
                        f"give at least one value, e.g. {name}: [{_example(name)}]")
    canon = [_value(doc, name, v, where + ((i,) if isinstance(raw, list) else ()))
             for i, v in enumerate(values)]
    return Param(name, values=tuple(canon))


def _recipe_param(doc: YamlDoc, name: str, raw: Any, recipe: dict | None) -> Param:
    """synth.<setting> / package.<setting>: each value is another recipe."""
    where = ("parameters", name)
    step = name.partition(".")[0]
    if name not in rcp.PARAMETERS:
        raise doc.error(where, f"unknown parameter {name!r}: not a {step} setting of a "
                               f"dataset recipe",
                        closest(name, rcp.PARAMETERS, "see farm/datasets/recipe.py"))
    if recipe is None:
        raise doc.error(where, f"parameter {name} changes the dataset recipe, but base has "
                               f"no recipe: (it names a built dataset with data:)",
                        "give base.recipe instead of base.data, or drop this parameter")
    if isinstance(raw, dict):
        if rcp.numeric_kind(name) is None:
            raise doc.error(where, f"parameter {name}: ranges are for numeric settings",
                            f"give {name} a list of values")
        return _range(doc, name, raw)
    # a list is a grid, except where one value is a list itself: [[14, 30], [20, 40]]
    listy = isinstance(raw, list) and (not raw or isinstance(raw[0], list) or
                                       not rcp.list_valued(name) or
                                       (rcp.sized(name) and isinstance(raw[0], str)))
    values = raw if listy else [raw]
    if not values:
        raise doc.error(where, f"parameter {name}: the grid is empty",
                        "give at least one value")
    canon = []
    for i, v in enumerate(values):
        at = where + ((i,) if listy else ())
        try:
            value = rcp.normalize(name, v, doc.folder)
            rcp.check(rcp.apply(recipe, {name: rcp.as_param(name, value)}))
        except BadInput as e:
            raise doc.error(at, f"parameter {e.reason}" if e.reason.startswith(name)
                            else f"parameter {name}: {e.reason}", e.hint) from None
        canon.append(rcp.as_param(name, value))
    return Param(name, values=tuple(canon))


def _range(doc: YamlDoc, name: str, raw: dict) -> Param:
    where = ("parameters", name)
    kinds = [k for k in raw if k in RANGES]
    if len(raw) != 1 or not kinds:
        raise doc.error(where, f"parameter {name}: a mapping must be one range, "
                               f"{' or '.join(RANGES)}: [low, high]",
                        f"or give grid values as a list: {name}: [{_example(name)}]")
    kind = kinds[0]
    if rcp.is_recipe_parameter(name):
        pass  # numeric: checked by _recipe_param; the ends are checked as whole recipes
    elif name not in NET_KEYS or NET_KEYS[name] not in ("int", "float"):
        raise doc.error(where, f"parameter {name}: ranges are for numeric [net] keys",
                        f"give {name} a list of values")
    bounds = raw[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise doc.error(where + (kind,), f"parameter {name}: {kind} takes [low, high]",
                        f"e.g. {name}: {{{kind}: [0.0001, 0.01]}}")
    low, high = (doc.number(where + (kind, i), v) for i, v in enumerate(bounds))
    if low > high:
        raise doc.error(where + (kind,), f"parameter {name}: {kind} range [{bounds[0]}, "
                                         f"{bounds[1]}] has low > high",
                        f"write it as [{bounds[1]}, {bounds[0]}]")
    if kind == "log_uniform" and low <= 0:
        raise doc.error(where + (kind,), f"parameter {name}: log_uniform needs low > 0, "
                                         f"got {bounds[0]}", "use uniform, or a positive low")
    for i, bound in enumerate((low, high)):
        if rcp.is_recipe_parameter(name):
            try:
                rcp.normalize(name, round(bound) if rcp.numeric_kind(name) == "int"
                              else bound, doc.folder)
            except BadInput as e:
                raise doc.error(where + (kind, i), f"parameter {e.reason}", e.hint) from None
        else:
            _value(doc, name, _fmt(bound), where + (kind, i))
    return Param(name, range=kind, low=low, high=high)


def _value(doc: YamlDoc, name: str, raw: Any, where: tuple) -> str:
    """One value as darknet will read it, checked: a str, "B/S", or an absolute cfg path."""
    if raw is None or isinstance(raw, (bool, dict, list)):
        raise doc.error(where, f"parameter {name}: {raw!r} is not a value",
                        f"e.g. {name}: [{_example(name)}]")
    text = str(raw).strip()
    if name == "cfg":
        return doc.file(where, "base cfg", value=text)
    if name in JOINT:
        parts = text.split("/") if "/" in text else [text, text] if name == "width/height" \
            else []
        if len(parts) != 2:
            raise doc.error(where, f"parameter {name}: {text!r} is not two values A/B",
                            f"e.g. {name}: [{_example(name)}]")
        keys = JOINT[name]
        clean = _net(doc, where, dict(zip(keys, parts)))
        a, b = (int(clean[k]) for k in keys)
        if name == "batch/subdivisions" and a % b:
            raise doc.error(where, f"parameter {name}: batch={a} is not a multiple of "
                                   f"subdivisions={b}", "e.g. 64/16 or 64/32")
        return f"{a}/{b}"
    return _net(doc, where, {name: text})[name]


def _net(doc: YamlDoc, where: tuple, values: dict[str, str]) -> dict[str, str]:
    try:
        return validate_net_overrides(values)
    except BadInput as e:
        raise doc.error(where, e.reason.removeprefix("--set "), e.hint) from None


def _fixed(doc: YamlDoc, params: tuple[Param, ...], budget: Budget) -> dict[str, str]:
    raw = doc.mapping(("base", "set"), None)
    keys = {k for p in params for k in JOINT.get(p.name, (p.name,))}
    out: dict[str, str] = {}
    for key, value in raw.items():
        where = ("base", "set", key)
        if str(key) in keys:
            raise doc.error(where, f"base.set.{key} is also a searched parameter",
                            "keep it in one place")
        if key == "max_batches" and budget.iterations:
            raise doc.error(where, "base.set.max_batches and budget.iterations both set "
                                   "max_batches", "keep budget.iterations")
        if key not in NET_KEYS:
            raise doc.error(where, f"base.set: {key!r} is not a [net] key darknet reads",
                            closest(str(key), NET_KEYS, _PARAMETERS_HINT))
        out.update(_net(doc, where, {str(key): str(value)}))
    return out


def _check_max_batches(doc: YamlDoc, params: tuple[Param, ...], budget: Budget) -> None:
    param = next((p for p in params if p.name == "max_batches"), None)
    if param is None or not budget.iterations:
        return
    over = [v for v in param.values if int(v) > budget.iterations] or \
        ([_fmt(param.high)] if param.range and param.high > budget.iterations else [])
    if over:
        raise doc.error(("parameters", "max_batches"), f"max_batches {over[0]} is above "
                        f"budget.iterations {budget.iterations}",
                        "raise the budget or lower max_batches")


def _search(doc: YamlDoc, params: tuple[Param, ...]) -> str:
    ranged = next((p for p in params if p.range), None)
    search = doc.data.get("search") or ("random" if ranged else "grid")
    if search not in ("grid", "random"):
        raise doc.error(("search",), f"search: {search!r} is not grid or random",
                        "use search: grid (every combination) or search: random")
    if search == "grid" and ranged:
        raise doc.error(("parameters", ranged.name), f"parameter {ranged.name}: a range "
                        "needs search: random (a grid takes a list of values)",
                        "add `search: random` and `trials: N`, or list the values")
    return search


def _trials(doc: YamlDoc, search: str, params: tuple[Param, ...]) -> int:
    if search == "grid":
        size = math.prod(len(p.values) for p in params)
        if "trials" in doc.data:
            raise doc.error(("trials",), f"trials: applies to random search; this grid has "
                                         f"{size} trials", "delete `trials:` or add "
                                                           "`search: random`")
        count = size
    else:
        count = doc.integer(("trials",), default=None, minimum=1)
        if count is None and "search" in doc.data:
            raise doc.error(("search",), "random search needs trials: N",
                            "add e.g. `trials: 8`")
        if count is None:
            ranged = next(p for p in params if p.range)
            raise doc.error(("parameters", ranged.name), f"parameter {ranged.name} is a "
                            "range, so this is a random search: it needs trials: N",
                            "add e.g. `trials: 8`, or list the values to search a grid")
    if count > MAX_TRIALS:
        raise doc.error(("parameters",), f"the sweep expands into {count} trials, more than "
                                         f"{MAX_TRIALS}", "search fewer values, or use "
                                                          "search: random with trials: N")
    return count


def _queue(doc: YamlDoc) -> str | None:
    queue = doc.data.get("queue")
    if queue is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]+", str(queue)):
        raise doc.error(("queue",), f"queue: {queue!r} is not a queue name",
                        "use gpu or host.<name>")
    return str(queue) if queue is not None else None


def _budget(doc: YamlDoc) -> Budget:
    doc.mapping(("budget",), _BUDGET)
    wall = doc.get(("budget", "wall_time"))
    return Budget(iterations=doc.integer(("budget", "iterations"), default=None, minimum=1),
                  wall_time=None if wall is None else _duration(doc, wall))


def _duration(doc: YamlDoc, raw: Any) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(raw))
    if not m or float(m.group(1)) <= 0:
        raise doc.error(("budget", "wall_time"), f"budget.wall_time: {raw!r} is not a "
                        "duration", "give seconds, or e.g. 90m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _objective(doc: YamlDoc) -> str:
    objective = str(doc.data.get("objective") or "map50")
    if objective not in OBJECTIVES:
        raise doc.error(("objective",), f"objective: {objective!r} is unknown",
                        "use map50 (best mAP@0.50), screens_map50 (on whole screenshots) "
                        "or min_avg_loss (where no mAP exists)")
    if objective == "screens_map50" and doc.get(("eval", "screens")) is None:
        raise doc.error(("objective",), "objective: screens_map50 needs the screens to "
                                        "score: eval: {screens: ...} is missing",
                        "add `eval: {screens: shots/}` (a `farm dataset package --kind "
                        "screens` folder)")
    return objective


def _eval_screens(doc: YamlDoc) -> str | None:
    """eval.screens: a screens set (its folder or obj.data), checked to be one; or
    HOST:/path on another host, kept as written (`farm sweep submit` checks it there)."""
    doc.mapping(("eval",), _EVAL)
    raw = doc.get(("eval", "screens"))
    if raw is None:
        return None
    host, sep, rest = str(raw).partition(":")
    if sep and host and "/" not in host and rest.startswith("/"):
        return f"{host}:{posixpath.normpath(rest)}"
    path = os.path.normpath(os.path.join(doc.folder, os.path.expanduser(str(raw))))
    from farm.datasets.screens import open_screens
    try:
        return open_screens(path).obj_data
    except BadInput as e:
        raise doc.error(("eval", "screens"), f"eval.screens: {e.reason} ({path})",
                        e.hint) from None


def _early_stopping(doc: YamlDoc) -> EarlyStopping:
    doc.mapping(("early_stopping",), _EARLY)
    median = None
    if doc.get(("early_stopping", "median")) is not None:
        doc.mapping(("early_stopping", "median"), _MEDIAN)
        median = MedianRule(
            grace=doc.integer(("early_stopping", "median", "grace"), default=0, minimum=0),
            min_trials=doc.integer(("early_stopping", "median", "min_trials"), default=2,
                                   minimum=1))
    return EarlyStopping(
        zero_map_after=doc.integer(("early_stopping", "zero_map_after"), default=None,
                                   minimum=1),
        median=median)


def _policy(doc: YamlDoc) -> dict[str, str]:
    raw = {str(k): str(v) for k, v in doc.mapping(("policy",), None).items()}
    for key in raw:
        try:
            Policy.from_settings(Settings(), {key: raw[key]})
        except BadInput as e:
            raise doc.error(("policy", key), f"policy: {e.message}", e.hint) from None
    return raw


def _example(name: str) -> str:
    return {"batch/subdivisions": '"64/16", "64/32"', "width/height": "320, 416",
            "cfg": "a.cfg, b.cfg"}.get(name, "0.001, 0.002" if NET_KEYS.get(name) == "float"
                                       else "1000, 2000")


def _fmt(x: float) -> str:
    return f"{x:.6g}"
