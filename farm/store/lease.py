"""Leases: a Redis key one holder owns for a while, renewed while it works.

One implementation for every "one at a time" of the farm: a run's lease (one darknet per
run, the reaper reads who holds it), a sweep's lock (one controller per advance) and a
recipe's build lease (one builder per dataset). The token names the holding process
(worker, pid, its start time and machine, a nonce), so a holder that died on this
machine is seen at once, and the TTL frees what a holder elsewhere left behind.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from farm.errors import FarmError, LeaseLost
from farm.procs import Pid
from farm.store import scripts
from farm.store.redis import Connection

#: Seconds between two tries of a lease another holder keeps (`acquire(wait=...)`).
POLL = 0.01


class Lease:
    """The lease at `key` for this process. `index`: (set key, member) that the member
    joins in the same step as the lease is taken (a run and the running set)."""

    def __init__(self, db: Connection, key: str, ttl: float, *, owner: str = "",
                 index: tuple[str, str] | None = None):
        self.db, self.key, self.ttl, self.index = db, key, ttl, index
        self.token = json.dumps({"worker": owner, **Pid.this().to_dict(),
                                 "nonce": uuid.uuid4().hex[:8]})

    @property
    def _ms(self) -> int:
        return int(self.ttl * 1000)

    def acquire(self, wait: float = 0.0) -> bool:
        """True when this process holds the lease now; False when another holder kept it
        for `wait` seconds."""
        keys, args = [self.key], [self.token, self._ms]
        if self.index:
            keys.append(self.index[0])
            args.append(self.index[1])
        deadline = time.monotonic() + wait
        with self.db.translated():
            while not self.db.script(scripts.ACQUIRE)(keys=keys, args=args):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(POLL)
        return True

    def renew(self) -> None:
        """Another `ttl` from now; LeaseLost when another holder has it."""
        with self.db.translated():
            ok = self.db.script(scripts.RENEW_IF_OWNER)(keys=[self.key],
                                                         args=[self.token, self._ms])
        if not ok:
            raise LeaseLost(f"{self.key} is no longer held by {self.token}")

    def release(self) -> None:
        """Let it go (only if this process still holds it)."""
        with self.db.translated():
            self.db.script(scripts.RELEASE_IF_OWNER)(keys=[self.key], args=[self.token])

    @contextmanager
    def held(self, wait: float = 0.0) -> Iterator[bool]:
        """Hold the lease for the block; yields False if another holder kept it for
        `wait` seconds (then the block must not do the work)."""
        got = self.acquire(wait)
        try:
            yield got
        finally:
            if got:
                self.release()

    def keep_alive(self, name: str) -> LeaseRenewer:
        """Renew the lease every third of its TTL on a thread, until stopped."""
        renewer = LeaseRenewer(self, name)
        renewer.start()
        return renewer


def holder_pid(holder: str | None) -> Pid | None:
    """The process a lease's token names (None: no lease, or one written before leases
    named their process)."""
    try:
        return Pid.from_dict(json.loads(holder)) if holder else None
    except (ValueError, KeyError, TypeError):
        return None


class LeaseRenewer(threading.Thread):
    """Renews `lease` every third of its TTL until stopped; a lease taken by another
    holder (LeaseLost) sets `lost` and ends it. A Redis blip is tried again: the TTL
    leaves two more chances."""

    def __init__(self, lease: Lease, name: str):
        super().__init__(daemon=True, name=name)
        self.lease = lease
        self.lost = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease.ttl / 3):
            try:
                self.lease.renew()
            except LeaseLost:
                self.lost.set()
                return
            except FarmError:
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.join()
