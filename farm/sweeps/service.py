"""Submitting, advancing and cancelling sweeps: the controller's side effects.

`advance` is the whole controller. It is called by beat every few seconds, by the
training task when a trial's run ends (so the next trial starts at once), and by the CLI
after submitting; any number of these may overlap. One advance holds the sweep's lock;
a trial's run id is written once, with HSETNX, before its run is enqueued; and a trial
that has a run id is never submitted again, only re-sent if the controller died before
sending it (the run's lease makes a second `farm.train` message for one run harmless).
"""
from __future__ import annotations

import functools
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from farm.darknet import dialect as dialects
from farm.errors import BadInput, FarmError, Finding
from farm.queues import pinned_host
from farm.runs.cancel import Cancel, cancel
from farm.runs.effective import trained_note
from farm.runs.life import move
from farm.runs.model import Run, RunState
from farm.darknet.cfg import Cfg
from farm.settings import Settings
from farm.store import Store
from farm.sweeps import builds as bld
from farm.sweeps import controller as ctl
from farm.datasets import recipe as rcp
from farm.datasets.recipe import RecipeState
from farm.sweeps.model import Sweep, SweepState, Trial, TrialState, new_sweep_id
from farm.sweeps.progress import Observed, observe
from farm.sweeps.spec import SweepSpec, check_concurrency
from farm.store.recipes import RecipeStore
from farm.store.sweeps import SweepStore

if TYPE_CHECKING:
    from farm.runs import checks

#: untouched trials an advance looks at, at least (the next ones to start, in order)
FRONTIER = 64

#: enqueue(run_id, queue) -> Celery task id: how a trial's run reaches a GPU worker (under
#: the task id recorded on the run, so the board links it to Flower).
Enqueue = Callable[[str, "str | None"], str]


@dataclass
class Tick:
    """What one advance did."""

    sweep_id: str
    state: str = ""
    started: list[tuple[int, str]] = field(default_factory=list)  # (trial, run id)
    stopped: list[ctl.Stop] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    builds: list[tuple[str, str]] = field(default_factory=list)  # (recipe, what was done)
    busy: bool = False  # another controller held the sweep
    ended: bool = False  # this advance closed the sweep (its end is notified once)
    #: run id -> iterations whose evaluation the sweep waits for before it closes
    waiting: dict[str, set[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"sweep": self.sweep_id, "state": self.state, "busy": self.busy,
                "waiting": {r: sorted(its) for r, its in self.waiting.items()},
                "started": self.started, "resent": self.resent, "builds": self.builds,
                "stopped": [[s.index, s.run_id, s.reason] for s in self.stopped]}


def submit_sweep(store: Store, settings: Settings, spec: SweepSpec, *,
                 gpu_workers: int | Callable[[], int] | None = None,
                 warn: Callable[[Finding], None] | None = None) -> Sweep:
    """Plan every trial, check what they will train with (farm.runs.checks), and record
    the sweep as running. Nothing is recorded when a check fails. `gpu_workers`: how
    many workers consume the sweep's queue, or how to learn it once the plan is made."""
    # the checks (dataset lint, memory) and the training stack are imported where they are
    # used: `farm sweep show` and the board never need them
    from farm.runs import checks
    inventory = checks.read_inventory(settings)
    host = pinned_host(spec.queue)
    judge = functools.partial(checks.trainer_dialect, settings, host=host, inventory=inventory)
    first = ctl.expand(spec if spec.search == "grid" else replace(spec, trials=1))[0]
    cadence = dialects.checkpoint_cadence(judge(Cfg.load(first.cfg)), spec.eval_every)
    spec = replace(spec, eval_every=cadence.every)  # what darknet can write
    trials = ctl.plan(spec, judge)
    for finding in _check_inputs(spec, trials, judge,
                                 checks.submit_limit(settings, host, inventory)):
        if warn:
            warn(finding)
    if callable(gpu_workers):
        gpu_workers = gpu_workers()
    warning = None if gpu_workers is None else check_concurrency(spec, gpu_workers)
    sweep = Sweep(id=new_sweep_id(), spec=spec.to_dict(), created_at=time.time(),
                  host=settings.host_name,
                  name=spec.name or os.path.splitext(os.path.basename(spec.path))[0],
                  warnings=[w for w in (cadence.note, warning) if w],
                  cfgs={c: Cfg.load(c).dumps() for c in {t.cfg for t in trials}})
    store.ping()
    store.sweeps.create(sweep, trials, {key: rcp.canonical(recipe) for key, recipe
                                             in ctl.recipes(spec, trials).items()})
    return sweep


def _check_inputs(spec: SweepSpec, trials: list[Trial], judge: Callable[[Cfg], str],
                  limit: checks.MemoryLimit | None) -> list[Finding]:
    """The checks of `farm train` for a sweep, each only once: every distinct trial cfg
    shape (its memory, the start weights against it), the dataset once per dialect and class
    count (a recipe's dataset does not exist yet: it is linted when built). Returns the
    warnings; FindingsError on the first trial with an error."""
    from farm.runs import checks
    bases: dict[str, Cfg] = {}
    done: set[tuple] = set()
    linted: set[tuple[str, int | None]] = set()
    warnings: dict[tuple, Finding] = {}
    for trial in trials:
        shape = ctl.trial_shape(trial)  # the VALUE_ONLY values were checked by plan()
        if shape in done:
            continue
        done.add(shape)
        base = bases.setdefault(trial.cfg, Cfg.load(trial.cfg))
        cfg, place = checks.with_overrides(base, trial.overrides,
                                           f"{spec.path} (trial {trial.index})")
        dialect = judge(cfg)
        lint = spec.data is not None and (dialect, cfg.classes) not in linted
        linted.add((dialect, cfg.classes))
        found = checks.check_training(data=spec.data if lint else None, cfg=cfg,
                                      weights=spec.weights, dialect=dialect,
                                      base_dir=os.path.dirname(spec.path), limit=limit,
                                      place=place)
        for f in found.warnings:
            warnings.setdefault((f.path, f.line, f.reason), f)
    return list(warnings.values())


def advance(store: Store, settings: Settings, sweep_id: str, *, enqueue: Enqueue,
            now: Callable[[], float] = time.time, early_stop: bool = True,
            wait: float = 0.0, build: bld.EnqueueBuild | None = None,
            evaluators: Callable[[], bool] | None = None) -> Tick:
    """Move one sweep on: re-send runs a dead controller never sent, have the datasets
    of the next trials built (`build` sends one; without it, only trials whose dataset
    is ready move), start trials up to the concurrency, stop hopeless ones
    (`early_stop`), and close the sweep when every trial has ended and their
    evaluations have landed (`evaluators()` says an eval worker is up to land them; None:
    close without waiting; at most `settings.eval_wait` after a trial ended). Safe to
    call at any time, from anywhere, any number of times."""
    sweeps = store.sweeps
    observed = _observe(store, sweeps, sweep_id) if early_stop else None
    with sweeps.lock(sweep_id, wait=wait) as held:
        if not held:
            return Tick(sweep_id, busy=True)
        sweep = sweeps.load(sweep_id)
        tick = Tick(sweep_id, state=sweep.state.value)
        if sweep.state is not SweepState.RUNNING:
            return tick
        spec = SweepSpec.from_dict(sweep.spec)
        trials = _working_set(sweeps, sweep_id, spec)
        runs = _runs(store, trials)
        _record_results(sweeps, sweep_id, trials, runs)
        _cancel_orphans(store, sweep_id, trials)
        tick.resent = _resend_unsent(sweeps, sweep_id, spec, trials, runs, enqueue)
        recipes = store.recipes
        builds = _builds(recipes, trials)
        _fail_unbuildable(sweeps, sweep_id, trials, builds)
        views = _views(trials, runs, observed, builds, now())
        if build is not None:
            for key in ctl.builds_wanted(views, spec.concurrency):
                done = bld.request(recipes, key, builds.get(key, {}), build, now())
                if done:
                    tick.builds.append((key, done))
        tick.started = _start(store, settings, sweeps, sweep, spec, trials, views, enqueue,
                              builds)
        if observed is not None:
            tick.stopped = ctl.decide_stops(spec, views, now())
            _stop(store, sweeps, sweep_id, trials, tick.stopped, now())
        if not tick.started and ctl.finished(views):
            missing = _unevaluated(store, trials, now() - settings.eval_wait)
            if missing and evaluators is not None and evaluators():
                tick.waiting = missing  # the eval task's hook advances it when they land
                return tick
            # the summary names the best trial: with every evaluation that landed
            observed = observe(store, sweeps, sweep_id, spec.objective, trials, runs,
                               reread_maps=True)
            views = _views(trials, runs, observed, builds, now())
            _close(sweeps, sweep, spec, views, now(), missing)
            tick.ended = True
        tick.state = sweep.state.value
        return tick


def cancel_sweep(store: Store, sweep_id: str) -> list[str]:
    """Cancel the sweep: running trials are asked to stop, the others never start.
    Returns the run ids asked to stop."""
    sweeps = store.sweeps
    with sweeps.lock(sweep_id, wait=20.0) as held:
        if not held:
            raise FarmError(f"sweep {sweep_id} is held by another controller",
                            hint="try again in a few seconds")
        sweep = sweeps.load(sweep_id)
        if sweep.state is not SweepState.RUNNING:
            return []
        asked = []
        for trial in sweeps.trials(sweep_id):
            if trial.result:
                continue
            if trial.run_id is None:
                if not trial.error:
                    trial.cancelled = True
                    sweeps.save_trial(sweep_id, trial)
                continue
            run = store.runs.load(trial.run_id)
            if cancel(store, run, "cancelled with its sweep before it started") \
                    is not Cancel.ENDED:
                asked.append(run.id)
        sweep.state, sweep.ended_at = SweepState.CANCELLED, time.time()
        sweep.message = f"cancelled; {len(asked)} running trial(s) asked to stop"
        sweeps.save(sweep)
        return asked


def leaderboard_of(store: Store, sweep_id: str, now: float | None = None
                   ) -> tuple[Sweep, SweepSpec, list[ctl.Row]]:
    """The sweep, its spec, and its trials ranked (what `farm sweep show` prints)."""
    sweeps = store.sweeps
    sweep = sweeps.find(sweep_id)
    spec = SweepSpec.from_dict(sweep.spec)
    trials = sweeps.trials(sweep.id)
    runs = _runs(store, trials)
    observed = observe(store, sweeps, sweep.id, spec.objective, trials, runs,
                       reread_maps=True)
    now = time.time() if now is None else now
    builds = store.recipes.load_many(t.recipe_key for t in trials if t.recipe_key)
    views = _views(trials, runs, observed, builds, now)
    return sweep, spec, ctl.leaderboard(spec, views, now)


@dataclass
class Standings:
    """One page of a sweep's leaderboard, and the counts of all its trials."""

    sweep: Sweep
    spec: SweepSpec
    total: int                      # trials in the sweep
    counts: dict[str, int]          # trials by state (TrialState values)
    ranked: int                     # trials with a value of the objective
    rows: list[ctl.Row]             # the page, in leaderboard order
    page: int
    per: int
    observed: dict[int, Observed]   # curves of the page's trials that have a run

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per))


def standings(store: Store, sweep_id: str, page: int = 1, per: int = 50,
              now: float | None = None) -> Standings:
    """A page of the leaderboard in the order `leaderboard_of` gives (ranked trials
    best first, then the rest by trial number), reading only the trials something has
    happened to and the page's plans: a sweep of 10 000 queued trials costs what its
    running ones cost."""
    sweeps = store.sweeps
    sweep = sweeps.find(sweep_id)
    spec = SweepSpec.from_dict(sweep.spec)
    now = time.time() if now is None else now
    total, touched = sweeps.touched(sweep.id)
    runs = _runs(store, touched)
    observed = observe(store, sweeps, sweep.id, spec.objective, touched, runs,
                       reread_maps=True)
    counts, views, builds = _tally(store, sweeps, sweep.id, total, touched, runs, observed,
                                   now)
    rows = ctl.leaderboard(spec, views, now)
    ranked = [r for r in rows if r.rank is not None]
    start = (page - 1) * per
    out = ranked[start:start + per]
    if len(out) < per:
        out += _unranked(sweeps, sweep.id, spec, total, rows, builds, now,
                         max(start - len(ranked), 0), per - len(out))
    shown = {r.trial for r in out}
    return Standings(sweep=sweep, spec=spec, total=total, counts=counts, ranked=len(ranked),
                     rows=out, page=page, per=per,
                     observed={i: o for i, o in observed.items() if i in shown})


def trial_counts(store: Store, sweep_id: str, now: float | None = None
                 ) -> tuple[int, dict[str, int]]:
    """How many trials the sweep has, and how many are in each state."""
    sweeps = store.sweeps
    total, touched = sweeps.touched(sweep_id)
    counts, _, _ = _tally(store, sweeps, sweep_id, total, touched, _runs(store, touched),
                          None, time.time() if now is None else now)
    return total, counts


def _tally(store: Store, sweeps: SweepStore, sweep_id: str, total: int,
           touched: list[Trial], runs: dict[str, Run], observed: dict[int, Observed] | None,
           now: float):
    """Counts by state of every trial, the views of the touched ones, and the build
    records of the sweep's recipes."""
    counted = sweeps.recipe_counts(sweep_id)
    builds = store.recipes.load_many(set(counted) | {t.recipe_key for t in touched
                                                          if t.recipe_key})
    views = _views(touched, runs, observed, builds, now)
    counts = _counts(views)
    _count_untouched(counts, total - len(views), touched, counted, builds)
    return counts, views, builds


def _counts(views: list[ctl.TrialView]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in views:
        counts[v.state.value] = counts.get(v.state.value, 0) + 1
    return counts


def _count_untouched(counts: dict[str, int], untouched: int, touched: list[Trial],
                     per_recipe: dict[str, int], builds: dict[str, dict[str, str]]) -> None:
    """Trials nothing happened to are pending, or building while their dataset is."""
    building = 0
    for key, n in per_recipe.items():
        if (builds.get(key) or {}).get("state") != RecipeState.READY:
            building += n - sum(1 for t in touched if t.recipe_key == key)
    for state, n in ((TrialState.BUILDING, building), (TrialState.PENDING,
                                                       untouched - building)):
        if n > 0:
            counts[state.value] = counts.get(state.value, 0) + n


def _unranked(sweeps: SweepStore, sweep_id: str, spec: SweepSpec, total: int,
              rows: list[ctl.Row], builds: dict[str, dict[str, str]], now: float,
              skip: int, take: int) -> list[ctl.Row]:
    """Rows `skip`..`skip + take` of the trials without a value, by trial number: the
    touched ones from `rows`, the others from their plans."""
    known = {r.trial: r for r in rows}
    ranked = {r.trial for r in rows if r.rank is not None}
    indices = [i for i in range(total) if i not in ranked][skip:skip + take]
    fresh = {t.index: t for t in sweeps.planned(sweep_id, [i for i in indices
                                                           if i not in known])}
    views = _views(list(fresh.values()), {}, None, builds, now)
    made = {r.trial: r for r in ctl.leaderboard(spec, views, now)}
    return [known.get(i) or made[i] for i in indices if i in known or i in made]


# ---------------------------------------------------------------------------------------


def _observe(store: Store, sweeps: SweepStore, sweep_id: str) -> dict[int, Observed] | None:
    """Curves read outside the lock (they are a cache any reader may refresh), so the
    lock is held for milliseconds, not for the metric reads."""
    sweep = sweeps.load(sweep_id)
    if sweep.state is not SweepState.RUNNING:
        return None
    _, trials = sweeps.touched(sweep_id)  # a trial nothing happened to has no curve
    spec_objective = sweep.spec["objective"]
    return observe(store, sweeps, sweep_id, spec_objective, trials, _runs(store, trials))


def _working_set(sweeps: SweepStore, sweep_id: str, spec: SweepSpec) -> list[Trial]:
    """The trials one advance must see: every trial something happened to, and the first
    untouched ones by number (the next to start; at least FRONTIER). An advance of a
    sweep with 10 000 trials queued costs what its running ones cost. A recipe sweep
    reads every trial: which ones can start depends on whose dataset is ready."""
    if spec.recipe is not None:
        return sweeps.trials(sweep_id)
    total, touched = sweeps.touched(sweep_id)
    taken = {t.index for t in touched}
    ahead = [i for i in range(total) if i not in taken][:max(FRONTIER, 3 * spec.concurrency)]
    return sorted(touched + sweeps.planned(sweep_id, ahead), key=lambda t: t.index)


def _runs(store: Store, trials: list[Trial]) -> dict[str, Run]:
    """The runs of trials that have not ended (an ended trial keeps its `result`)."""
    return {t.run_id: store.runs.load(t.run_id) for t in trials if t.run_id and not t.result}


def _record_results(sweeps: SweepStore, sweep_id: str, trials: list[Trial],
                    runs: dict[str, Run]) -> None:
    for trial in trials:
        run = runs.get(trial.run_id or "")
        result = ctl.snapshot(trial, run) if run else None
        if result:
            trial.result = result
            sweeps.save_trial(sweep_id, trial)


def _builds(recipes: RecipeStore, trials: list[Trial]) -> dict[str, dict[str, str]]:
    """The build records of the recipes that trials not submitted yet wait for."""
    return recipes.load_many(t.recipe_key for t in trials if t.recipe_key and not t.run_id
                             and not t.error and not t.cancelled)


def _fail_unbuildable(sweeps: SweepStore, sweep_id: str, trials: list[Trial],
                      builds: dict[str, dict[str, str]]) -> None:
    """Trials whose dataset could not be built fail with the build's message."""
    for trial in trials:
        rec = builds.get(trial.recipe_key or "")
        failed = rec and rec.get("state") == RecipeState.FAILED
        if failed and not trial.run_id and not trial.error and not trial.cancelled:
            trial.error = f"dataset {trial.recipe_key} could not be built: {rec.get('error')}"
            sweeps.save_trial(sweep_id, trial)


def _views(trials: list[Trial], runs: dict[str, Run], observed: dict[int, Observed] | None,
           builds: dict[str, dict[str, str]] | None = None, now: float = 0.0
           ) -> list[ctl.TrialView]:
    views = []
    for t in trials:
        seen = (observed or {}).get(t.index)
        rec = (builds or {}).get(t.recipe_key or "")
        views.append(ctl.view(t, runs.get(t.run_id or ""),
                              iteration=seen.iteration if seen else 0,
                              curve=seen.curve if seen else (),
                              maps=seen.maps if seen else (), build=rec,
                              screens=seen.screens if seen else (),
                              waiting=bld.status(rec, now) if t.recipe_key else ""))
    return views


def _start(store: Store, settings: Settings, sweeps: SweepStore, sweep: Sweep,
           spec: SweepSpec, trials: list[Trial], views: list[ctl.TrialView],
           enqueue: Enqueue, builds: dict[str, dict[str, str]]) -> list[tuple[int, str]]:
    """Submit pending trials until `concurrency` hold GPUs. A trial that cannot be
    submitted (its files vanished, say) fails with the reason and frees its place."""
    by_index = {t.index: t for t in trials}
    started: list[tuple[int, str]] = []
    while True:
        picks = ctl.next_to_start(views, spec.concurrency)
        if not picks:
            return started
        trial = by_index[picks[0]]
        built = builds[trial.recipe_key] if trial.recipe_key else {}
        # a dataset built on another host is fetched from it by the GPU host that trains
        origin = built.get("host") or None if not spec.weights else None
        run = _submit(store, settings, sweeps, sweep, spec, trial, enqueue,
                      built.get("data", spec.data), origin)
        state = TrialState.FAILED if trial.error else TrialState.QUEUED  # (or another's)
        views = [replace(v, state=state) if v.index == trial.index else v for v in views]
        if run:
            started.append((trial.index, run.id))


def _submit(store: Store, settings: Settings, sweeps: SweepStore, sweep: Sweep,
            spec: SweepSpec, trial: Trial, enqueue: Enqueue, data: str,
            origin: str | None = None) -> Run | None:
    from farm.runs.service import submit_run
    trial.claimed_at = time.time()  # see _cancel_orphans
    sweeps.save_trial(sweep.id, trial)
    try:
        run = submit_run(store, settings, data=data, cfg=trial.cfg, weights=spec.weights,
                         cfg_text=sweep.cfgs.get(trial.cfg),
                         overrides=trial.overrides, policy=spec.policy,
                         base_dir=os.path.dirname(spec.path), sweep=sweep.id,
                         trial=trial.index, eval_every=spec.eval_every, origin=origin,
                         task_id=str(uuid.uuid4()),  # the board links it to Flower
                         check=False,  # checked at submit_sweep; the worker checks again
                         eval_screens=spec.eval_screens,
                         rank_by="screens_map50" if spec.objective == "screens_map50"
                         else "map50")
    except BadInput as e:
        trial.error = f"could not be submitted: {e}"
        sweeps.save_trial(sweep.id, trial)
        return None
    if not sweeps.assign_run(sweep.id, trial.index, run.id):
        _discard(store, run, f"trial {trial.index} of sweep {sweep.id} already had a run")
        return None
    trial.run_id = run.id
    trial.task_id = enqueue(run.id, spec.queue)
    trial.enqueued_at = time.time()
    sweeps.save_trial(sweep.id, trial)
    return run


def _discard(store: Store, run: Run, why: str) -> None:
    store.runs.save(move(run, RunState.CANCELLED, f"never enqueued: {why}"))


def _cancel_orphans(store: Store, sweep_id: str, trials: list[Trial]) -> None:
    """A controller killed between submitting a trial's run and assigning it leaves a
    queued run no one will send; the trial (still without a run) is submitted afresh,
    so the orphan is cancelled here, where it is found."""
    claimed = [t for t in trials if t.claimed_at and not t.run_id and not t.error]
    if not claimed:
        return
    since = min(t.claimed_at for t in claimed) - 1.0
    assigned = {t.run_id for t in trials if t.run_id}
    for run in store.runs.recent(limit=500):
        if run.sweep == sweep_id and run.id not in assigned and run.created_at >= since \
                and run.state is RunState.QUEUED:
            _discard(store, run, "its controller stopped before giving it to a trial")


def _resend_unsent(sweeps: SweepStore, sweep_id: str, spec: SweepSpec, trials: list[Trial],
                   runs: dict[str, Run], enqueue: Enqueue) -> list[str]:
    """Runs assigned to a trial by a controller that died before enqueueing them."""
    resent = []
    for trial in trials:
        run = runs.get(trial.run_id or "")
        if run is not None and trial.enqueued_at is None and run.state is RunState.QUEUED:
            trial.task_id = enqueue(run.id, spec.queue)
            trial.enqueued_at = time.time()
            sweeps.save_trial(sweep_id, trial)
            resent.append(run.id)
    return resent


def _stop(store: Store, sweeps: SweepStore, sweep_id: str, trials: list[Trial],
          stops: list[ctl.Stop], now: float) -> None:
    by_index = {t.index: t for t in trials}
    for stop in stops:
        store.runs.request_cancel(stop.run_id)
        trial = by_index[stop.index]
        trial.stop_reason, trial.stopped_at = stop.reason, now
        sweeps.save_trial(sweep_id, trial)


def _unevaluated(store: Store, trials: list[Trial], since: float) -> dict[str, set[int]]:
    """Evaluations sent for trials' runs that ended after `since` and not recorded yet
    (the final checkpoint's is sent as its run ends). Older ones are not waited for."""
    out = {}
    for t in trials:
        if t.run_id and t.result and (t.result.get("ended_at") or 0) >= since:
            pending = store.evaluations.pending(t.run_id)
            if pending:
                out[t.run_id] = pending
    return out


def _close(sweeps: SweepStore, sweep: Sweep, spec: SweepSpec, views: list[ctl.TrialView],
           now: float, missing: dict[str, set[int]] | None = None) -> None:
    counts: dict[str, int] = {}
    for v in views:
        counts[v.state.value] = counts.get(v.state.value, 0) + 1
    rows = ctl.leaderboard(spec, views, now)
    top = rows[0] if rows and rows[0].best is not None else None
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    if top:
        trained = trained_note(top.settings)  # a restart may have lowered its rate
        summary += (f"; best: trial {top.trial} ({ctl.describe(top.params)})"
                    f"{' ' + trained if trained else ''}, "
                    f"{ctl.objective_label(spec.objective)} "
                    f"{ctl.format_value(spec.objective, top.best)}")
    if missing:
        summary += "; not evaluated: " + ", ".join(
            f"{run_id} iteration {', '.join(str(i) for i in sorted(its))}"
            for run_id, its in missing.items())
    sweep.state, sweep.ended_at, sweep.message = SweepState.DONE, now, summary
    sweeps.save(sweep)
