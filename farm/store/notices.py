"""What was sent of the farm's notifications (farm.notify), in Redis: each event's id
claimed once, its delivery recorded beside it. Keys (prefix `farm:notify:`):

    farm:notify:<event id>           hash: state (queued | delivered | gave_up), kind,
                                     tries, error, status, times; expires after KEEP
    farm:notify:<event id>:sending   held by the worker posting it now
    farm:notify:host:<name>          an outage of that host being told (expires when
                                     it has been quiet for `quiet` seconds)
"""
from __future__ import annotations

import time

from farm.store.redis import Connection
from farm.store.redis import key as farm_key

#: Seconds an event's record (and the claim of its id) is kept in Redis.
KEEP = 30 * 86400


def _k(*parts: str) -> str:
    return farm_key("notify", *parts)


class NoticeLedger:
    """Each event's record, and who is posting it now: a retried task, or two workers
    seeing one end, queue it once, and a redelivered message finds it delivered."""

    def __init__(self, db: Connection):
        self.db = db
        self.r = db.r

    def claim(self, event_id: str, kind: str) -> bool:
        """True for the first caller with this event id (it queues the event)."""
        key = _k(event_id)
        with self.db.translated():
            if not self.r.hsetnx(key, "state", "queued"):
                return False
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(key, mapping={"kind": kind, "tries": 0,
                                    "queued_at": repr(time.time())})
            pipe.expire(key, KEEP)
            pipe.execute()
        return True

    def begin(self, event_id: str, hold: float) -> bool:
        """Hold the delivery for `hold` seconds; False when it is delivered or another
        worker is posting it."""
        with self.db.translated():
            if self.r.hget(_k(event_id), "state") == "delivered":
                return False
            return bool(self.r.set(_k(event_id, "sending"), "1", nx=True, ex=max(1, int(hold))))

    def tried(self, event_id: str, error: str, *, final: bool = False) -> int:
        """A POST failed; returns the tries so far."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(_k(event_id), "tries", 1)
            pipe.hset(_k(event_id), mapping={"error": error, "tried_at": repr(time.time()),
                                             **({"state": "gave_up"} if final else {})})
            pipe.delete(_k(event_id, "sending"))
            return int(pipe.execute()[0])

    def delivered(self, event_id: str, status: int) -> None:
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(_k(event_id), "tries", 1)
            pipe.hset(_k(event_id), mapping={"state": "delivered", "status": status,
                                             "delivered_at": repr(time.time()), "error": ""})
            pipe.delete(_k(event_id, "sending"))
            pipe.execute()

    def record(self, event_id: str) -> dict[str, str]:
        with self.db.translated():
            return self.r.hgetall(_k(event_id))

    def outage(self, host: str, quiet: float, now: float | None = None) -> float | None:
        """A task found `host` unreachable: when this starts a new outage, its start (the
        caller sends host.away); None while the outage goes on (each sighting keeps it
        going for `quiet` more seconds)."""
        now = time.time() if now is None else now
        key = _k("host", host)
        with self.db.translated():
            if self.r.set(key, repr(now), nx=True, ex=max(1, int(quiet))):
                return now
            self.r.expire(key, max(1, int(quiet)))
        return None
