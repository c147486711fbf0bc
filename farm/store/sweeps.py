"""Sweeps in Redis, beside their runs.

Everything a controller needs to resume after the whole farm restarted is here; the
spec file is read once, at submission. Keys (prefix `farm:sweep:`):

    farm:sweep:<id>            JSON of the sweep: its spec as data, state, warnings, times
    farm:sweep:index           sorted set of sweep ids by creation time
    farm:sweep:active          set of sweeps that still have work (what tick_all walks)
    farm:sweep:<id>:plan       hash: trial index -> JSON [params, cfg, overrides, recipe
                               key]: what the spec chose, written once at submission
    farm:sweep:<id>:trials     hash: trial index -> JSON of what happened to the trial
                               since (claimed, enqueued, stopped, error, result); only
                               trials something happened to, so a sweep of 10 000
                               queued trials is read in what has moved, not in 10 000
                               (sweeps written before the plan hash keep whole trials here)
    farm:sweep:<id>:recipes    hash: recipe key -> how many trials train on it
    farm:sweep:<id>:runs       hash: trial index -> run id, written once (HSETNX): the
                               guard that keeps a trial from ever getting a second run
    farm:sweep:<id>:curves     hash: trial index -> JSON objective seen so far (stream
                               cursor and points), so each tick reads only new metrics
    farm:sweep:<id>:lock       the lease of the controller advancing the sweep
                               (farm.store.lease)
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from farm.errors import NotFound
from farm.store import scripts
from farm.store.lease import Lease
from farm.store.recipes import recipe_key
from farm.store.redis import Connection
from farm.store.redis import key as farm_key
from farm.sweeps.model import PLAN_FIELDS, Sweep, SweepState, Trial

LISTING = "`farm sweep list` lists the sweeps"
#: Seconds a controller's hold on a sweep lasts if it is killed mid-advance.
LOCK_TTL = 15.0


def _k(*parts: str) -> str:
    return farm_key("sweep", *parts)


def _plan_doc(t: Trial) -> str:
    return json.dumps([t.params, t.cfg, t.overrides, t.recipe_key], separators=(",", ":"))


def _trial(index: int, plan: str | None, state: str | None, run_id: str | None) -> Trial:
    """A trial from its plan and what happened to it (or from one whole old document)."""
    doc = json.loads(state) if state else {}
    if "params" not in doc:
        doc.update(zip(PLAN_FIELDS, json.loads(plan)))
    doc["index"], doc["run_id"] = index, run_id
    return Trial.from_dict(doc)


class SweepStore:
    def __init__(self, db: Connection):
        self.db = db
        self.r = db.r

    # -- sweeps -------------------------------------------------------------------------
    def create(self, sweep: Sweep, trials: list[Trial],
               recipes: dict[str, str] | None = None) -> None:
        """The sweep and all its trials in one transaction: a half-written sweep never
        exists for a controller to resume. `recipes`: key -> canonical JSON of each
        dataset recipe its trials use (kept if another sweep wrote it first)."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            for key, text in (recipes or {}).items():
                pipe.hsetnx(recipe_key(key), "recipe", text)
                pipe.sadd(recipe_key(key, "sweeps"), sweep.id)
            pipe.set(_k(sweep.id), json.dumps(sweep.to_dict()))
            pipe.hset(_k(sweep.id, "plan"), mapping={str(t.index): _plan_doc(t) for t in trials})
            counts: dict[str, int] = {}
            for t in trials:
                if t.recipe_key:
                    counts[t.recipe_key] = counts.get(t.recipe_key, 0) + 1
            if counts:
                pipe.hset(_k(sweep.id, "recipes"), mapping=counts)
            pipe.zadd(_k("index"), {sweep.id: sweep.created_at})
            pipe.sadd(_k("active"), sweep.id)
            pipe.execute()

    def save(self, sweep: Sweep) -> None:
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            pipe.set(_k(sweep.id), json.dumps(sweep.to_dict()))
            if sweep.state is not SweepState.RUNNING:
                pipe.srem(_k("active"), sweep.id)
            pipe.execute()

    def load(self, sweep_id: str) -> Sweep:
        with self.db.translated():
            raw = self.r.get(_k(sweep_id))
        if raw is None:
            raise NotFound(f"no sweep {sweep_id!r}", hint=LISTING)
        return Sweep.from_dict(json.loads(raw))

    def find(self, prefix: str) -> Sweep:
        """A sweep by id or by an unambiguous id prefix."""
        return self.load(self.db.find_id(prefix, _k("index"), _k, "sweep", LISTING))

    def recent(self, limit: int = 50) -> list[Sweep]:
        with self.db.translated():
            ids = self.r.zrevrange(_k("index"), 0, limit - 1)
            raws = self.r.mget([_k(i) for i in ids]) if ids else []
        return [Sweep.from_dict(json.loads(r)) for r in raws if r]

    def active_ids(self) -> list[str]:
        with self.db.translated():
            return sorted(self.r.smembers(_k("active")))

    # -- trials -------------------------------------------------------------------------
    def trials(self, sweep_id: str) -> list[Trial]:
        """Every trial, with its run id from the write-once hash."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(_k(sweep_id, "plan"))
            pipe.hgetall(_k(sweep_id, "trials"))
            pipe.hgetall(_k(sweep_id, "runs"))
            plans, states, runs = pipe.execute()
        indices = sorted({int(i) for i in plans} | {int(i) for i in states})
        return [_trial(i, plans.get(str(i)), states.get(str(i)), runs.get(str(i)))
                for i in indices]

    def touched(self, sweep_id: str) -> tuple[int, list[Trial]]:
        """How many trials the sweep has, and those something happened to (claimed,
        given a run, failed, cancelled, ended), by index: the others are still pending
        exactly as planned (`planned` reads them)."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=False)
            pipe.hlen(_k(sweep_id, "plan"))
            pipe.hgetall(_k(sweep_id, "trials"))
            pipe.hgetall(_k(sweep_id, "runs"))
            total, states, runs = pipe.execute()
            indices = sorted({int(i) for i in states} | {int(i) for i in runs})
            plans = self.r.hmget(_k(sweep_id, "plan"), [str(i) for i in indices]) \
                if total and indices else [None] * len(indices)
        trials = [_trial(i, p, states.get(str(i)), runs.get(str(i)))
                  for i, p in zip(indices, plans)]
        return (total or len(states)), trials

    def planned(self, sweep_id: str, indices: list[int]) -> list[Trial]:
        """Trials nothing has happened to yet, as planned (no state, no run)."""
        if not indices:
            return []
        with self.db.translated():
            plans = self.r.hmget(_k(sweep_id, "plan"), [str(i) for i in indices])
        return [_trial(i, p, None, None) for i, p in zip(indices, plans) if p]

    def recipe_counts(self, sweep_id: str) -> dict[str, int]:
        """recipe key -> how many of the sweep's trials train on its dataset."""
        with self.db.translated():
            return {k: int(v) for k, v in self.r.hgetall(_k(sweep_id, "recipes")).items()}

    def sizes(self, sweep_ids: list[str]) -> dict[str, tuple[int, int]]:
        """sweep id -> (trials, trials given a run), in one round trip (a list of sweeps)."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=False)
            for i in sweep_ids:
                pipe.hlen(_k(i, "plan"))
                pipe.hlen(_k(i, "trials"))
                pipe.hlen(_k(i, "runs"))
            raw = pipe.execute()
        return {i: (raw[3 * k] or raw[3 * k + 1], raw[3 * k + 2])
                for k, i in enumerate(sweep_ids)}

    def save_trial(self, sweep_id: str, trial: Trial) -> None:
        """What happened to the trial (its plan is never written again; a sweep stored
        before the plan hash keeps the whole trial, plan included)."""
        with self.db.translated():
            self.db.script(scripts.SAVE_TRIAL)(
                keys=[_k(sweep_id, "plan"), _k(sweep_id, "trials")],
                args=[str(trial.index), json.dumps(trial.state_dict(), separators=(",", ":")),
                      json.dumps(trial.to_dict(), separators=(",", ":"))])

    def assign_run(self, sweep_id: str, index: int, run_id: str) -> bool:
        """Give trial `index` its run, once: False when it already has one."""
        with self.db.translated():
            return bool(self.r.hsetnx(_k(sweep_id, "runs"), str(index), run_id))

    # -- observed objective -------------------------------------------------------------
    def curves(self, sweep_id: str) -> dict[int, dict[str, Any]]:
        with self.db.translated():
            raw = self.r.hgetall(_k(sweep_id, "curves"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def save_curves(self, sweep_id: str, curves: dict[int, dict[str, Any]]) -> None:
        if not curves:
            return
        with self.db.translated():
            self.r.hset(_k(sweep_id, "curves"),
                        mapping={str(k): json.dumps(v) for k, v in curves.items()})

    # -- one controller at a time -------------------------------------------------------
    @contextmanager
    def lock(self, sweep_id: str, *, ttl: float = LOCK_TTL, wait: float = 0.0
             ) -> Iterator[bool]:
        """Hold the sweep for one advance; yields False if another controller kept it
        for `wait` seconds. The TTL frees a sweep whose controller was killed."""
        with Lease(self.db, _k(sweep_id, "lock"), ttl, owner="controller").held(wait) as held:
            yield held
