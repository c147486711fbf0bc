"""Which Celery workers are up, as they say themselves. Key:

    farm:worker:<name>   JSON {queues, pid, at}, expiring: the worker writes it again
                         every `worker_announce` seconds while it runs and removes it
                         when it stops; one killed outright expires within three turns
"""
from __future__ import annotations

import json
import os
import time

from farm.store.redis import Connection, key

_PREFIX = key("worker", "")


class WorkerPresence:
    def __init__(self, db: Connection):
        self.db = db

    def announce(self, name: str, queues: list[str], ttl: float) -> None:
        """`name` (a Celery node name) is up and consumes `queues`, for `ttl` seconds."""
        doc = {"queues": sorted(queues), "pid": os.getpid(), "at": time.time()}
        with self.db.translated():
            self.db.r.set(_PREFIX + name, json.dumps(doc), px=max(int(ttl * 1000), 1))

    def leave(self, name: str) -> None:
        with self.db.translated():
            self.db.r.delete(_PREFIX + name)

    def present(self) -> dict[str, list[str]]:
        """The workers that said they are up, and the queues each consumes."""
        with self.db.translated():
            names = sorted(self.db.r.scan_iter(match=_PREFIX + "*", count=1000))
            docs = self.db.r.mget(names) if names else []
        return {n[len(_PREFIX):]: json.loads(d)["queues"] for n, d in zip(names, docs) if d}
