"""Sweep state in Redis, beside the runs (farm.state.Store owns the connection; this
module borrows its client, and imports redis only to translate its errors).

Everything a controller needs to resume after the whole farm restarted is here; the
spec file is read once, at submission. Keys (prefix `farm:sweep:`):

    farm:sweep:<id>            JSON of the sweep: its spec as data, state, warnings, times
    farm:sweep:index           sorted set of sweep ids by creation time
    farm:sweep:active          set of sweeps that still have work (what tick_all walks)
    farm:sweep:<id>:trials     hash: trial index -> JSON trial (plan, enqueue, stop reason)
    farm:sweep:<id>:runs       hash: trial index -> run id, written once (HSETNX): the
                               guard that keeps a trial from ever getting a second run
    farm:sweep:<id>:curves     hash: trial index -> JSON objective seen so far (stream
                               cursor and points), so each tick reads only new metrics
    farm:sweep:<id>:lock       token of the controller advancing the sweep (SET NX PX)
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from farm.errors import NotFound
from farm.state import RELEASE_IF_OWNER, Store, translated
from farm.sweeps.model import Sweep, SweepState, Trial


def _k(*parts: str) -> str:
    return "farm:sweep:" + ":".join(parts)


class SweepStore:
    def __init__(self, store: Store):
        self.store = store
        self.r = store.r
        self._release = self.r.register_script(RELEASE_IF_OWNER)

    # -- sweeps -------------------------------------------------------------------------
    def create(self, sweep: Sweep, trials: list[Trial]) -> None:
        """The sweep and all its trials in one transaction: a half-written sweep never
        exists for a controller to resume."""
        with translated(self.store.url):
            pipe = self.r.pipeline(transaction=True)
            pipe.set(_k(sweep.id), json.dumps(sweep.to_dict()))
            pipe.hset(_k(sweep.id, "trials"),
                      mapping={str(t.index): json.dumps(t.to_dict()) for t in trials})
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
        if len(ids) == 1:
            return self.load(ids[0])
        if len(ids) > 1:
            raise NotFound(f"{prefix!r} matches {len(ids)} sweeps",
                           hint="give more of the id: " + ", ".join(ids[:5]))
        raise NotFound(f"no sweep {prefix!r}", hint="`farm sweep list` lists the sweeps")

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
            pipe.hgetall(_k(sweep_id, "trials"))
            pipe.hgetall(_k(sweep_id, "runs"))
            raw, runs = pipe.execute()
        trials = [Trial.from_dict(json.loads(v)) for v in raw.values()]
        for t in trials:
            t.run_id = runs.get(str(t.index))
        return sorted(trials, key=lambda t: t.index)

    def save_trial(self, sweep_id: str, trial: Trial) -> None:
        with translated(self.store.url):
            self.r.hset(_k(sweep_id, "trials"), str(trial.index), json.dumps(trial.to_dict()))

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
