"""`farm up`'s supervisor events in Redis, for the board. Key:

    farm:supervisor:events   list (newest first, capped) of JSON events: a child of
                             `farm up` died, was restarted, was given up
"""
from __future__ import annotations

import json
from typing import Any

from farm.store.redis import Connection, key

EVENTS = key("supervisor", "events")
#: Supervisor events kept in Redis (the oldest are dropped).
SUPERVISOR_EVENTS_KEPT = 500


class SupervisorEvents:
    def __init__(self, db: Connection):
        self.db = db

    def record(self, events: list[dict[str, Any]]) -> None:
        """Keep `farm up`'s events (a child died, restarted, given up) for the board."""
        if not events:
            return
        with self.db.translated():
            pipe = self.db.r.pipeline()
            pipe.lpush(EVENTS, *(json.dumps(e) for e in events))
            pipe.ltrim(EVENTS, 0, SUPERVISOR_EVENTS_KEPT - 1)
            pipe.execute()

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` supervisor events, newest first; each has `at` (unix time),
        `child` (a child of `farm up`, or "farm" for the farm itself), `event` (up, down,
        died, restarted, gave_up), `pid`, `code` (exit code; -N: killed by signal N) and
        `message`."""
        with self.db.translated():
            raw = self.db.r.lrange(EVENTS, 0, limit - 1)
        return [json.loads(x) for x in raw]
