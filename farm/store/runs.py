"""Runs in Redis: their documents, who holds each one, what the reaper reads. Keys:

    farm:run:<id>            JSON document of the run (attempts, checkpoints, state)
    farm:runs                sorted set of run ids by creation time
    farm:runs:running        set of the ids of runs that are running or held by a worker
                             (what the reaper reads: every such run, however old)
    farm:run:<id>:lease      the token of the process that holds the run (farm.store.lease);
                             expires without heartbeat
    farm:run:<id>:cancel     set when a person asked to cancel the run
"""
from __future__ import annotations

import json
import time

from farm.errors import LeaseLost, NotFound
from farm.runs.life import lose, move
from farm.runs.model import Run, RunState
from farm.store.lease import Lease
from farm.store.redis import Connection, key

RUNNING = key("runs", "running")
RUNNING_INDEXED = key("runs", "running", "indexed")
LISTING = "`farm runs` lists the runs"


def no_run(run_id: str) -> NotFound:
    return NotFound(f"no run {run_id!r}", hint=LISTING)


def write_run(pipe, run: Run) -> None:
    """The one writer of run docs: the doc, the index by creation time, and the running
    set (a member exactly while the run is running)."""
    pipe.set(key("run", run.id), json.dumps(run.to_dict()))
    pipe.zadd(key("runs"), {run.id: run.created_at})
    if run.state is RunState.RUNNING:
        pipe.sadd(RUNNING, run.id)
    else:
        pipe.srem(RUNNING, run.id)


class RunStore:
    def __init__(self, db: Connection):
        self.db = db

    def save(self, run: Run) -> None:
        with self.db.translated():
            pipe = self.db.r.pipeline()
            write_run(pipe, run)
            pipe.execute()

    def save_held(self, run: Run, lease: Lease, why: str) -> None:
        """Save the run only while `lease` still holds it, in one step: a holder frozen
        past its lease never writes its stale view over its successor's. LeaseLost(why)
        when another holder has it."""
        def body(pipe) -> bool:
            if pipe.get(lease.key) != lease.token:
                return False
            pipe.multi()
            write_run(pipe, run)
            pipe.execute()
            return True
        if not self.db.watching([lease.key], body, False):
            raise LeaseLost(why)

    def load(self, run_id: str) -> Run:
        with self.db.translated():
            raw = self.db.r.get(key("run", run_id))
        if raw is None:
            raise no_run(run_id)
        return Run.from_dict(json.loads(raw))

    def ids(self, limit: int = 100) -> list[str]:
        """The newest `limit` run ids, newest first."""
        with self.db.translated():
            return self.db.r.zrevrange(key("runs"), 0, limit - 1)

    def recent(self, limit: int = 100) -> list[Run]:
        """The newest `limit` runs, newest first."""
        ids = self.ids(limit)
        if not ids:
            return []
        with self.db.translated():
            raws = self.db.r.mget([key("run", i) for i in ids])
        return [Run.from_dict(json.loads(r)) for r in raws if r]

    def find(self, prefix: str) -> Run:
        """A run by id or by an unambiguous id prefix."""
        return self.load(self.db.find_id(prefix, key("runs"), lambda i: key("run", i),
                                         "run", LISTING))

    def require(self, run_id: str) -> None:
        """NotFound unless the run exists (for reads that would answer empty otherwise)."""
        with self.db.translated():
            if not self.db.r.exists(key("run", run_id)):
                raise no_run(run_id)

    # -- who holds a run ----------------------------------------------------------------
    def lease(self, run_id: str, owner: str, ttl: float) -> Lease:
        """The run's lease for this process (`acquire` it). Taking it puts the run in the
        running set at once: a holder that dies before it marks the run running is found
        by the reaper too."""
        return Lease(self.db, key("run", run_id, "lease"), ttl, owner=owner,
                     index=(RUNNING, run_id))

    def holder(self, run_id: str) -> str | None:
        """The token of the process that holds the run (None: no one does)."""
        with self.db.translated():
            return self.db.r.get(key("run", run_id, "lease"))

    def running_leases(self) -> dict[str, str | None]:
        """Every run in the running set, with its lease (None: no one holds it). Two
        round trips however many runs were ever made."""
        r = self.db.r
        with self.db.translated():
            if not r.exists(RUNNING_INDEXED):
                self._index_running()
            ids = sorted(r.smembers(RUNNING))
            leases = r.mget([key("run", i, "lease") for i in ids]) if ids else []
        return dict(zip(ids, leases))

    def _index_running(self) -> None:
        """Fill the running set from every run doc, once (Redis data older than the set)."""
        r = self.db.r
        ids = r.zrange(key("runs"), 0, -1)
        for n in range(0, len(ids), 500):
            chunk = ids[n:n + 500]
            for run_id, raw in zip(chunk, r.mget([key("run", i) for i in chunk])):
                if raw and json.loads(raw).get("state") == RunState.RUNNING.value:
                    r.sadd(RUNNING, run_id)
        r.set(RUNNING_INDEXED, "1")

    def requeue_lost(self, run_id: str, holder: str | None, task_id: str,
                     message: str, why: str) -> Run | None:
        """Mark a run whose holder is gone as queued again under `task_id`, its open
        attempt lost for `why`, atomically: only while its lease is still `holder` (None:
        no lease) and the run unfinished; the dead holder's lease is deleted in the same
        step. None when anything changed meanwhile (another reaper, the run ended): then
        nothing is written."""
        run_key, lease_key = key("run", run_id), key("run", run_id, "lease")

        def body(pipe) -> Run | None:
            raw = pipe.get(run_key)
            if pipe.get(lease_key) != holder:
                return None
            run = Run.from_dict(json.loads(raw)) if raw else None
            pipe.multi()
            if run is None or run.state.finished:
                pipe.srem(RUNNING, run_id)  # a stale member: nothing to resume
                pipe.execute()
                return None
            move(lose(run, why), RunState.QUEUED, message)
            run.task_id = task_id
            if holder is not None:
                pipe.delete(lease_key)
            write_run(pipe, run)
            pipe.execute()
            return run
        return self.db.watching([run_key, lease_key], body, None)

    # -- cancel ---------------------------------------------------------------------------
    def request_cancel(self, run_id: str) -> None:
        with self.db.translated():
            self.db.r.set(key("run", run_id, "cancel"), str(time.time()))

    def cancel_requested(self, run_id: str) -> bool:
        with self.db.translated():
            return bool(self.db.r.exists(key("run", run_id, "cancel")))
