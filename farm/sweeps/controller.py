"""The sweep's decisions, as pure functions of what it knows: which trials exist, which
start next, which stop early and why, and how they rank.

No Redis, no Celery, no clock: `farm.sweeps.service` gathers a `TrialView` per trial,
asks these functions, and carries the answers out. That is what lets the rules be tested
on made-up curves, and what makes a tick safe to repeat (the same views give the same
answers).
"""
from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass, replace
from typing import Callable

from farm.darknet.cfg import NET_KEYS, VALUE_ONLY, Cfg, check_cfg, net_value_finding
from farm.darknet.dialect import Dialect
from farm.errors import BadInput, Severity
from farm.runs import effective
from farm.runs.model import Outcome, Run, RunState
from farm.runs.schedule import fit_steps
from farm.datasets import recipe as rcp
from farm.sweeps.model import Trial, TrialState
from farm.sweeps.spec import JOINT, Param, SweepSpec, check_rules_can_fire

Points = tuple[tuple[int, float], ...]  # (iteration, value), finite values only

#: "mAP still 0": below 1 %. An untrained net scores a few tenths of a percent by chance
#: (random boxes that happen to overlap a mark); measured on the micro dataset.
ZERO_MAP = 0.01


# ---------------------------------------------------------------------------------------
# Planning: the spec becomes trials, once


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of the spec, in a fixed order: the grid in the order the parameters
    and values are written, or `spec.trials` draws seeded by `spec.seed`."""
    if spec.search == "grid":
        combos = itertools.product(*(p.values for p in spec.parameters))
        choices = [dict(zip((p.name for p in spec.parameters), combo)) for combo in combos]
    else:
        rng = random.Random(spec.seed)
        choices = [{p.name: _draw(p, rng) for p in spec.parameters}
                   for _ in range(spec.trials)]
    return [_trial(spec, i, params) for i, params in enumerate(choices)]


def _draw(p: Param, rng: random.Random) -> str:
    if not p.range:
        return rng.choice(p.values)
    if p.range == "log_uniform":
        x = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    else:
        x = rng.uniform(p.low, p.high)
    kind = rcp.numeric_kind(p.name) if rcp.is_recipe_parameter(p.name) else NET_KEYS[p.name]
    return str(round(x)) if kind == "int" else f"{x:.4g}"


def _trial(spec: SweepSpec, index: int, params: dict[str, str]) -> Trial:
    overrides = dict(spec.fixed)
    cfg = spec.cfg
    for name, value in params.items():
        if rcp.is_recipe_parameter(name):
            continue  # the dataset: see recipe_of
        if name == "cfg":
            cfg = value
        elif name in JOINT:
            overrides.update(zip(JOINT[name], value.split("/")))
        else:
            overrides[name] = value
    if spec.budget.iterations and "max_batches" not in overrides:
        overrides["max_batches"] = str(spec.budget.iterations)
    recipe = recipe_of(spec, params)
    return Trial(index=index, params=dict(params), cfg=cfg, overrides=overrides,
                 recipe_key=rcp.recipe_key(recipe) if recipe else None)


def recipe_of(spec: SweepSpec, params: dict[str, str]) -> dict | None:
    """The dataset recipe of a trial with `params` (None when base.data names one)."""
    return rcp.apply(spec.recipe, params) if spec.recipe else None


def recipes(spec: SweepSpec, trials: list[Trial]) -> dict[str, dict]:
    """key -> recipe of every distinct dataset the trials train on."""
    out: dict[str, dict] = {}
    for t in trials:
        if t.recipe_key and t.recipe_key not in out:
            out[t.recipe_key] = recipe_of(spec, t.params)
    return out


def fit_schedule(trial: Trial, base: Cfg) -> None:
    """Scale `steps` with a changed max_batches (farm.runs.schedule.fit_steps), unless the
    trial sets steps itself."""
    steps = fit_steps(base.max_batches, base.steps, base.net_get("policy"), trial.overrides)
    if steps is not None:
        trial.overrides["steps"] = steps


def plan(spec: SweepSpec, dialect: Dialect | Callable[[Cfg], Dialect] = Dialect.PJREDDIE
         ) -> list[Trial]:
    """`expand`, then fit each trial's schedule and check its cfg as darknet will read
    it, so a trial that could only end as bad input is refused before any trains.
    `dialect`: the one to judge with, or how to tell it from a trial's cfg.

    Trials that differ only in keys whose value alone matters to the checks (VALUE_ONLY:
    the learning rate of a random search) share one check of their cfg, and each of
    those values is checked once: 10 000 trials cost a few checks, not 10 000."""
    bases: dict[str, Cfg] = {}
    checked: dict[tuple, Cfg] = {}  # shape -> the cfg of its first trial, which passed
    trials = expand(spec)
    for trial in trials:
        if trial.cfg not in bases:
            bases[trial.cfg] = Cfg.load(trial.cfg)
        fit_schedule(trial, bases[trial.cfg])
        shape = trial_shape(trial)
        seen = checked.get(shape)
        if seen is None:
            cfg = bases[trial.cfg].copy()
            for key, value in trial.overrides.items():
                cfg.set_net(key, value)
            judged = dialect(cfg) if callable(dialect) else dialect
            errors = [f for f in check_cfg(cfg, training=True, dialect=judged)
                      if f.severity is Severity.ERROR]
            checked[shape] = cfg
        else:
            errors = [f for f in (net_value_finding(seen, k, v)
                                  for k, v in trial.overrides.items() if k in VALUE_ONLY) if f]
        if errors:
            first = errors[0]
            raise BadInput(f"trial {trial.index} ({describe(trial.params)}) would be refused: "
                           f"{first.reason}", path=spec.path, hint=first.fix)
    check_rules_can_fire(spec, max(int(t.overrides.get("max_batches") or
                                       bases[t.cfg].max_batches or 0) for t in trials))
    return trials


def trial_shape(trial: Trial) -> tuple:
    """What the checks of a trial's cfg depend on besides VALUE_ONLY values: trials of
    one shape pass or fail the cfg, memory, weights and dataset checks together."""
    return (trial.cfg, tuple(sorted((k, v) for k, v in trial.overrides.items()
                                    if k not in VALUE_ONLY)))


def describe(params: dict[str, str]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(value: str) -> str:
    return value.rsplit("/", 1)[-1] if value.startswith("/") else value


# ---------------------------------------------------------------------------------------
# What the controller sees


@dataclass(frozen=True)
class TrialView:
    """One trial at one moment: its plan, its run's progress, and its objective."""

    index: int
    params: dict[str, str]
    state: TrialState
    run_id: str | None = None
    iteration: int = 0              # the newest iteration its run reached
    curve: Points = ()              # the objective: avg loss or mAP@0.50 by iteration
    maps: Points = ()               # mAP@0.50 evaluations (for the zero-mAP rule)
    screens: Points = ()            # screens mAP@0.50 evaluations (eval.screens)
    attempts: int = 0
    divergences: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    stop_reason: str = ""
    message: str = ""
    recipe_key: str | None = None   # its dataset recipe, if the farm builds its dataset
    dataset: str | None = None      # the built dataset's id, once ready
    lineage: tuple = ()             # farm.runs.effective.lineage: who trained what, how


def trial_state(trial: Trial, run: Run | None, build: dict | None = None) -> TrialState:
    """`build`: the record of the trial's recipe build (RecipeStore.load), if it has one."""
    if trial.error:
        return TrialState.FAILED
    if run is None:
        if trial.cancelled:
            return TrialState.CANCELLED
        if trial.recipe_key and (build or {}).get("state") != "ready":
            return TrialState.BUILDING
        return TrialState.PENDING
    if not run.state.finished:
        if trial.stop_reason:
            return TrialState.STOPPING
        return TrialState.RUNNING if run.state is RunState.RUNNING else TrialState.QUEUED
    if run.state is RunState.COMPLETED:
        return TrialState.COMPLETED
    if run.state is RunState.CANCELLED:
        return TrialState.STOPPED if trial.stop_reason else TrialState.CANCELLED
    return TrialState.FAILED


def _facts(trial: Trial, run: Run | None, build: dict | None = None) -> dict:
    return {"state": trial_state(trial, run, build).value,
            "iteration": run.last_iteration if run else 0,
            "attempts": len(run.attempts) if run else 0,
            "divergences": sum(a.outcome is Outcome.DIVERGED for a in run.attempts)
            if run else 0,
            "started_at": run.attempts[0].started_at if run and run.attempts else None,
            "ended_at": run.ended_at if run else None,
            "message": run.message if run else "",
            "lineage": effective.lineage(run) if run else []}


def snapshot(trial: Trial, run: Run) -> dict | None:
    """What the leaderboard needs of a trial whose run has ended (None while it runs)."""
    facts = _facts(trial, run)
    return facts if TrialState(facts["state"]).finished else None


def view(trial: Trial, run: Run | None, *, iteration: int = 0, curve: Points = (),
         maps: Points = (), build: dict | None = None, waiting: str = "",
         screens: Points = ()) -> TrialView:
    """The view of a trial from its records and its observed curves; a trial with a
    `result` (its run ended) needs no run. `build`: its recipe's build record;
    `waiting`: what a trial waiting for that build shows (farm.sweeps.builds.status)."""
    r = trial.result or _facts(trial, run, build)
    message = trial.error or r["message"]
    if r["state"] == TrialState.BUILDING.value:
        message = f"waiting for dataset {trial.recipe_key}: {waiting or 'building'}"
    return TrialView(
        index=trial.index, params=trial.params, state=TrialState(r["state"]),
        run_id=trial.run_id, iteration=max(iteration, r["iteration"]), curve=curve,
        maps=maps, screens=screens, attempts=r["attempts"], divergences=r["divergences"],
        started_at=r["started_at"], ended_at=r["ended_at"], stop_reason=trial.stop_reason,
        message=message, recipe_key=trial.recipe_key,
        dataset=(build or {}).get("dataset_id") or None,
        lineage=tuple(r.get("lineage") or ()))


# ---------------------------------------------------------------------------------------
# Decisions


def next_to_start(views: list[TrialView], concurrency: int) -> list[int]:
    """Pending trials to submit now, in order, so that `concurrency` trials hold GPUs."""
    active = sum(v.state.active for v in views)
    pending = sorted(v.index for v in views if v.state is TrialState.PENDING)
    return pending[:max(0, concurrency - active)]


def builds_wanted(views: list[TrialView], concurrency: int) -> list[str]:
    """Recipes to have built now: those of the next 2 x concurrency trials not started
    yet, in trial order, so a GPU that frees up finds a dataset ready without the whole
    sweep's datasets filling the disk at once. Trials whose dataset is ready start
    meanwhile (next_to_start skips the waiting ones)."""
    ahead = sorted((v for v in views if v.state in (TrialState.PENDING, TrialState.BUILDING)),
                   key=lambda v: v.index)[:max(2 * concurrency, 1)]
    keys: list[str] = []
    for v in ahead:
        if v.state is TrialState.BUILDING and v.recipe_key not in keys:
            keys.append(v.recipe_key)
    return keys


def finished(views: list[TrialView]) -> bool:
    return all(v.state.finished for v in views)


@dataclass(frozen=True)
class Stop:
    index: int
    run_id: str
    reason: str


def decide_stops(spec: SweepSpec, views: list[TrialView], now: float) -> list[Stop]:
    """Running trials to stop, each with the rule and the numbers that condemned it:
    the wall-time budget, mAP still zero after `zero_map_after`, and the median rule."""
    stops = []
    for v in views:
        if v.state is not TrialState.RUNNING or not v.run_id:
            continue
        reason = (_over_budget(spec, v, now) or _zero_map(spec, v)
                  or _below_median(spec, v, views))
        if reason:
            stops.append(Stop(v.index, v.run_id, reason))
    return stops


def _over_budget(spec: SweepSpec, v: TrialView, now: float) -> str | None:
    limit = spec.budget.wall_time
    if limit and v.started_at is not None and now - v.started_at >= limit:
        return (f"wall-time budget used: {now - v.started_at:.0f} s of {limit:g} s "
                f"(budget.wall_time), at iteration {v.iteration}")
    return None


def _zero_map(spec: SweepSpec, v: TrialView) -> str | None:
    after = spec.early_stopping.zero_map_after
    if not after or not v.maps or v.iteration < after:
        return None
    latest = max(i for i, _ in v.maps)
    top = max(m for _, m in v.maps)
    if latest >= after and top < ZERO_MAP:
        return (f"mAP@0.50 still {top * 100:.2f} % (under {ZERO_MAP * 100:g} %) at iteration "
                f"{latest} (early_stopping.zero_map_after: {after})")
    return None


def _below_median(spec: SweepSpec, v: TrialView, views: list[TrialView]) -> str | None:
    rule = spec.early_stopping.median
    it = v.iteration
    if rule is None or it < max(rule.grace, 1):
        return None
    mine = best_at(v.curve, it, spec.goal)
    if mine is None:
        return None
    others = [best_at(o.curve, it, spec.goal) for o in views
              if o.index != v.index and o.iteration >= it]
    others = [x for x in others if x is not None]
    if len(others) < rule.min_trials:
        return None
    median = statistics.median(others)
    if not _better(median, mine, spec.goal):
        return None
    what = objective_label(spec.objective)
    return (f"{what} {format_value(spec.objective, mine)} at iteration {it} is worse than "
            f"the median {format_value(spec.objective, median)} of {len(others)} other "
            f"trial(s) there (median rule, grace {rule.grace})")


def best_at(points: Points, iteration: int, goal: str) -> float | None:
    """The best value reached at or before `iteration` (None when there is none)."""
    values = [x for i, x in points if i <= iteration]
    if not values:
        return None
    return max(values) if goal == "max" else min(values)


def best(points: Points, goal: str) -> tuple[float, int] | None:
    """The best value and the iteration where it was reached."""
    if not points:
        return None
    if goal == "max":
        i, x = max(points, key=lambda p: (p[1], -p[0]))  # the highest; the earliest of ties
    else:
        i, x = min(points, key=lambda p: (p[1], p[0]))   # the lowest; the earliest of ties
    return x, i


def _better(a: float, b: float, goal: str) -> bool:
    return a > b if goal == "max" else a < b


def objective_label(objective: str) -> str:
    return {"map50": "mAP@0.50", "screens_map50": "screens mAP@0.50"}.get(objective,
                                                                          "avg loss")


def overlay_map_label(objective: str) -> str:
    """The mAP panel of a sweep's overlay: the screens mAP when the sweep ranks on it
    (its curves are then screens mAP points), else the tiles' mAP."""
    return ("screens mAP@0.50 (whole screenshots)" if objective == "screens_map50"
            else "mAP@0.50")


def format_value(objective: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if objective == "min_avg_loss" else f"{value * 100:.2f} %"


# ---------------------------------------------------------------------------------------
# The leaderboard


@dataclass(frozen=True)
class Row:
    rank: int | None        # None for trials with no objective value yet
    trial: int
    run_id: str | None
    params: dict[str, str]
    state: str
    best: float | None
    best_iteration: int | None
    iterations: int
    restarts: int           # attempts - 1: divergence, crash, stall and lost restarts
    divergences: int
    wall_time: float | None
    note: str = ""
    recipe: str | None = None    # its dataset recipe's key (recipe sweeps)
    dataset: str | None = None   # the id of the dataset built from it, once ready
    #: what the weights at its best were really trained with (farm.runs.effective)
    settings: dict | None = None
    tile_map: float | None = None     # best mAP@0.50 on the valid tiles, whatever ranks
    screens_map: float | None = None  # best screens mAP@0.50 (eval.screens), side by side

    def to_dict(self) -> dict:
        return {"rank": self.rank, "trial": self.trial, "run_id": self.run_id,
                "params": self.params, "state": self.state, "best": self.best,
                "best_iteration": self.best_iteration, "iterations": self.iterations,
                "restarts": self.restarts, "divergences": self.divergences,
                "wall_time": self.wall_time, "note": self.note, "recipe": self.recipe,
                "dataset": self.dataset, "settings": self.settings,
                "tile_map": self.tile_map, "screens_map": self.screens_map}


def _note(v: TrialView) -> str:
    if not v.stop_reason:
        return v.message
    if v.state in (TrialState.STOPPED, TrialState.STOPPING):
        return v.stop_reason
    return f"ended before the stop took effect (stop: {v.stop_reason})"


def leaderboard(spec: SweepSpec, views: list[TrialView], now: float) -> list[Row]:
    """Trials best first by the objective; those without a value yet follow, in order."""
    rows = []
    for v in views:
        b = best(v.curve, spec.goal)
        wall = None if v.started_at is None else (v.ended_at or now) - v.started_at
        rows.append(Row(rank=None, trial=v.index, run_id=v.run_id, params=v.params,
                        state=v.state.value, best=b[0] if b else None,
                        best_iteration=b[1] if b else None, iterations=v.iteration,
                        restarts=max(v.attempts - 1, 0), divergences=v.divergences,
                        wall_time=wall, note=_note(v), recipe=v.recipe_key,
                        dataset=v.dataset,
                        settings=(effective.pick(list(v.lineage), b[1] if b else None)
                                  or {}).get("settings"),
                        tile_map=max((m for _, m in v.maps), default=None),
                        screens_map=max((m for _, m in v.screens), default=None)))
    sign = -1 if spec.goal == "max" else 1
    rows.sort(key=lambda r: (r.best is None, sign * (r.best or 0.0), r.trial))
    return [replace(r, rank=n if r.best is not None else None) for n, r in enumerate(rows, 1)]
