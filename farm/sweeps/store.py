"""Sweep state in Redis, beside the runs (farm.state.Store owns the connection; this
module borrows its client, and imports redis only for its WatchError).

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
    farm:sweep:<id>:lock       token of the controller advancing the sweep (SET NX PX)

Datasets built from recipes (farm.sweeps.recipe) are the farm's, not one sweep's: two
sweeps with the same recipe share one build. Keys (prefix `farm:recipe:`):

    farm:recipe:<key>          hash: `recipe` (canonical JSON, written at submission),
                               `claimed` (HSETNX: the one controller that sends the build),
                               `task_id`, `enqueued_at`, `state` (queued | building |
                               ready | failed), `step`, `worker`, `attempts`, `started_at`,
                               `ended_at`, `dataset_id`, `data` (its obj.data), `error`
    farm:recipe:<key>:lease    token of the worker building it (SET NX PX, renewed): one
                               build at a time; a builder that died lets it expire
    farm:recipe:<key>:sweeps   set of sweeps waiting for it (ticked when the build ends)
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import redis

from farm.errors import NotFound
from farm.state import RELEASE_IF_OWNER, Store, only_match, translated
from farm.sweeps.model import PLAN_FIELDS, Sweep, SweepState, Trial


def _k(*parts: str) -> str:
    return "farm:sweep:" + ":".join(parts)


def _plan_doc(t: Trial) -> str:
    return json.dumps([t.params, t.cfg, t.overrides, t.recipe_key], separators=(",", ":"))


def _trial(index: int, plan: str | None, state: str | None, run_id: str | None) -> Trial:
    """A trial from its plan and what happened to it (or from one whole old document)."""
    doc = json.loads(state) if state else {}
    if "params" not in doc:
        doc.update(zip(PLAN_FIELDS, json.loads(plan)))
    doc["index"], doc["run_id"] = index, run_id
    return Trial.from_dict(doc)


#: extend a lease's TTL only while this token holds it
RENEW_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def _rk(*parts: str) -> str:
    return "farm:recipe:" + ":".join(parts)


#: a trial's state alone where the sweep has a plan hash, else the whole trial
SAVE_TRIAL = """
if redis.call('exists', KEYS[1]) == 1 then
  return redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
end
return redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
"""


class SweepStore:
    def __init__(self, store: Store):
        self.store = store
        self.r = store.r
        self._release = self.r.register_script(RELEASE_IF_OWNER)
        self._save_trial = self.r.register_script(SAVE_TRIAL)

    # -- sweeps -------------------------------------------------------------------------
    def create(self, sweep: Sweep, trials: list[Trial],
               recipes: dict[str, str] | None = None) -> None:
        """The sweep and all its trials in one transaction: a half-written sweep never
        exists for a controller to resume. `recipes`: key -> canonical JSON of each
        dataset recipe its trials use (kept if another sweep wrote it first)."""
        with translated(self.store.url):
            pipe = self.r.pipeline(transaction=True)
            for key, text in (recipes or {}).items():
                pipe.hsetnx(_rk(key), "recipe", text)
                pipe.sadd(_rk(key, "sweeps"), sweep.id)
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
        with translated(self.store.url):
            pipe = self.r.pipeline(transaction=True)
            pipe.set(_k(sweep.id), json.dumps(sweep.to_dict()))
            if sweep.state is not SweepState.RUNNING:
                pipe.srem(_k("active"), sweep.id)
            pipe.execute()

    def load(self, sweep_id: str) -> Sweep:
        with translated(self.store.url):
            raw = self.r.get(_k(sweep_id))
        if raw is None:
            raise NotFound(f"no sweep {sweep_id!r}", hint="`farm sweep list` lists the sweeps")
        return Sweep.from_dict(json.loads(raw))

    def find(self, prefix: str) -> Sweep:
        """A sweep by id or by an unambiguous id prefix."""
        with translated(self.store.url):
            if self.r.exists(_k(prefix)):
                return self.load(prefix)
            ids = [i for i in self.r.zrange(_k("index"), 0, -1) if i.startswith(prefix)]
        return self.load(only_match(prefix, ids, "sweep", "`farm sweep list` lists the sweeps"))

    def recent(self, limit: int = 50) -> list[Sweep]:
        with translated(self.store.url):
            ids = self.r.zrevrange(_k("index"), 0, limit - 1)
            raws = self.r.mget([_k(i) for i in ids]) if ids else []
        return [Sweep.from_dict(json.loads(r)) for r in raws if r]

    def active_ids(self) -> list[str]:
        with translated(self.store.url):
            return sorted(self.r.smembers(_k("active")))

    # -- trials -------------------------------------------------------------------------
    def trials(self, sweep_id: str) -> list[Trial]:
        """Every trial, with its run id from the write-once hash."""
        with translated(self.store.url):
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
        with translated(self.store.url):
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
        with translated(self.store.url):
            plans = self.r.hmget(_k(sweep_id, "plan"), [str(i) for i in indices])
        return [_trial(i, p, None, None) for i, p in zip(indices, plans) if p]

    def recipe_counts(self, sweep_id: str) -> dict[str, int]:
        """recipe key -> how many of the sweep's trials train on its dataset."""
        with translated(self.store.url):
            return {k: int(v) for k, v in self.r.hgetall(_k(sweep_id, "recipes")).items()}

    def sizes(self, sweep_ids: list[str]) -> dict[str, tuple[int, int]]:
        """sweep id -> (trials, trials given a run), in one round trip (a list of sweeps)."""
        with translated(self.store.url):
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
        with translated(self.store.url):
            self._save_trial(keys=[_k(sweep_id, "plan"), _k(sweep_id, "trials")],
                             args=[str(trial.index),
                                   json.dumps(trial.state_dict(), separators=(",", ":")),
                                   json.dumps(trial.to_dict(), separators=(",", ":"))])

    def assign_run(self, sweep_id: str, index: int, run_id: str) -> bool:
        """Give trial `index` its run, once: False when it already has one."""
        with translated(self.store.url):
            return bool(self.r.hsetnx(_k(sweep_id, "runs"), str(index), run_id))

    # -- observed objective -------------------------------------------------------------
    def curves(self, sweep_id: str) -> dict[int, dict[str, Any]]:
        with translated(self.store.url):
            raw = self.r.hgetall(_k(sweep_id, "curves"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def save_curves(self, sweep_id: str, curves: dict[int, dict[str, Any]]) -> None:
        if not curves:
            return
        with translated(self.store.url):
            self.r.hset(_k(sweep_id, "curves"),
                        mapping={str(k): json.dumps(v) for k, v in curves.items()})

    # -- one controller at a time -------------------------------------------------------
    @contextmanager
    def lock(self, sweep_id: str, *, ttl: float = 15.0, wait: float = 0.0
             ) -> Iterator[bool]:
        """Hold the sweep for one advance; yields False if another controller kept it
        for `wait` seconds. The TTL frees a sweep whose controller was killed."""
        token = uuid.uuid4().hex
        key = _k(sweep_id, "lock")
        deadline = time.monotonic() + wait
        with translated(self.store.url):
            while not (held := bool(self.r.set(key, token, nx=True, px=int(ttl * 1000)))):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
        try:
            yield held
        finally:
            if held:
                with translated(self.store.url):
                    self._release(keys=[key], args=[token])


class RecipeStore:
    """The builds of recipe datasets (keys above). Writers touch their own fields of the
    hash: the controller `claimed`/`task_id`/`enqueued_at`, the builder the rest."""

    def __init__(self, store: Store):
        self.store = store
        self.r = store.r
        self._release = self.r.register_script(RELEASE_IF_OWNER)
        self._renew = self.r.register_script(RENEW_IF_OWNER)

    def load(self, key: str) -> dict[str, str]:
        """The build record and, as `lease`, the builder holding it now ("" if none),
        read in one transaction (a builder writes its end state before letting go)."""
        with translated(self.store.url):
            pipe = self.r.pipeline(transaction=True)
            pipe.hgetall(_rk(key))
            pipe.get(_rk(key, "lease"))
            rec, lease = pipe.execute()
        return {**rec, "lease": lease or ""} if rec else {}

    def load_many(self, keys) -> dict[str, dict[str, str]]:
        keys = sorted(set(keys))
        if not keys:
            return {}
        with translated(self.store.url):
            pipe = self.r.pipeline(transaction=True)
            for key in keys:
                pipe.hgetall(_rk(key))
                pipe.get(_rk(key, "lease"))
            raw = pipe.execute()
        return {k: {**raw[2 * i], "lease": raw[2 * i + 1] or ""}
                for i, k in enumerate(keys) if raw[2 * i]}

    def recipe(self, key: str) -> dict[str, Any]:
        with translated(self.store.url):
            text = self.r.hget(_rk(key), "recipe")
        if text is None:
            raise NotFound(f"no dataset recipe {key!r}",
                           hint="recipes are recorded when a sweep that uses them is "
                                "submitted")
        return json.loads(text)

    def claim(self, key: str, now: float) -> bool:
        """True for the one caller that is to send the build (HSETNX: build once)."""
        with translated(self.store.url):
            return bool(self.r.hsetnx(_rk(key), "claimed", repr(now)))

    def update(self, key: str, **values: Any) -> None:
        with translated(self.store.url):
            self.r.hset(_rk(key), mapping={k: "" if v is None else str(v)
                                           for k, v in values.items()})

    def set_state_if(self, key: str, expected: str, **values: Any) -> bool:
        """Write `values` only while `state` is still `expected` (WATCH/MULTI): a stale
        reader never overwrites an end state a builder wrote meanwhile."""
        with translated(self.store.url):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(_rk(key))
                    if (pipe.hget(_rk(key), "state") or "") != expected:
                        return False
                    pipe.multi()
                    pipe.hset(_rk(key), mapping={k: str(v) for k, v in values.items()})
                    pipe.execute()
                    return True
                except redis.WatchError:
                    return False

    def attempt(self, key: str) -> int:
        with translated(self.store.url):
            return int(self.r.hincrby(_rk(key), "attempts", 1))

    def waiting(self, key: str) -> list[str]:
        with translated(self.store.url):
            return sorted(self.r.smembers(_rk(key, "sweeps")))

    # -- the builder's lease --------------------------------------------------------------
    def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        token = f"{owner}:{uuid.uuid4().hex[:8]}"
        with translated(self.store.url):
            ok = self.r.set(_rk(key, "lease"), token, nx=True, px=int(ttl * 1000))
        return token if ok else None

    def renew(self, key: str, token: str, ttl: float) -> bool:
        with translated(self.store.url):
            return bool(self._renew(keys=[_rk(key, "lease")], args=[token, int(ttl * 1000)]))

    # -- reclaiming built datasets (farm.gc) ----------------------------------------------
    def built(self) -> dict[str, dict[str, str]]:
        """The record of every recipe whose dataset is built (`ready`), by key."""
        with translated(self.store.url):
            keys = [k.split(":")[2] for k in self.r.scan_iter(match=_rk("*"), count=500)
                    if k.count(":") == 2]
        return {k: rec for k, rec in self.load_many(keys).items() if rec.get("state") == "ready"}

    def forget(self, key: str, dataset_id: str) -> dict[str, str] | None:
        """Make a built recipe unbuilt (its dataset is about to be removed), so a sweep
        that needs it later builds it again; only while it is still `ready` with
        `dataset_id` (WATCH/MULTI). Returns the fields it dropped, for `restore`."""
        with translated(self.store.url):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(_rk(key))
                    rec = pipe.hgetall(_rk(key))
                    if rec.get("state") != "ready" or rec.get("dataset_id") != dataset_id:
                        return None
                    dropped = {k: v for k, v in rec.items() if k != "recipe"}
                    pipe.multi()
                    pipe.hdel(_rk(key), *dropped)
                    pipe.execute()
                    return dropped
                except redis.WatchError:
                    return None

    def restore(self, key: str, fields: dict[str, str]) -> None:
        """Undo `forget` (a sweep started to use the dataset meanwhile)."""
        with translated(self.store.url):
            self.r.hset(_rk(key), mapping=fields)

    def release(self, key: str, token: str) -> None:
        with translated(self.store.url):
            self._release(keys=[_rk(key, "lease")], args=[token])
