"""The board's reads: several keys of many runs at once, in as few round trips as the
pages need (a read model over the run, progress and evaluation keys; it writes nothing).
"""
from __future__ import annotations

import json
from typing import Any

from farm.runs.model import Run
from farm.store import scripts
from farm.store.evaluations import by_iteration, loads
from farm.store.redis import Connection, key
from farm.store.runs import RunStore, no_run

#: Live fields the runs list shows.
LIVE_FIELDS = ("iteration", "avg_loss", "updated_at")


class BoardReads:
    def __init__(self, db: Connection, runs: RunStore):
        self.db, self.runs = db, runs

    def runs_list(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest runs (as stored: plain dicts, not Run objects, which cost more than
        the rest together) with their live progress, best and newest Evaluation. Two round
        trips however many runs there are (the board's runs list): one command, because
        redis-py spends more time packing 500 small commands than Redis answering them."""
        ids = self.runs.ids(limit)
        if not ids:
            return []
        keys = [key("run", i) + suffix for i in ids
                for suffix in ("", ":best", ":lasteval", ":live")]
        with self.db.translated():
            flat = self.db.script(scripts.BOARD_ROWS)(keys=keys, args=LIVE_FIELDS)
        rows = []
        for n in range(0, len(flat), 3 + len(LIVE_FIELDS)):
            doc, best, last, *live = flat[n:n + 3 + len(LIVE_FIELDS)]
            if doc:
                rows.append({"run": json.loads(doc), "live": dict(zip(LIVE_FIELDS, live)),
                             "best": loads(best), "last_evaluation": loads(last)})
        return rows

    def run_page(self, run_id: str, log_lines: int = 200) -> dict[str, Any]:
        """Everything the run page shows, in one round trip."""
        k = key("run", run_id)
        with self.db.translated():
            pipe = self.db.r.pipeline(transaction=False)
            pipe.get(k)
            pipe.hgetall(f"{k}:live")
            pipe.hvals(f"{k}:evals")
            pipe.get(f"{k}:best")
            pipe.get(f"{k}:chart")
            pipe.xlen(f"{k}:metrics")
            pipe.lrange(f"{k}:maps", 0, -1)
            pipe.get(f"{k}:logn")
            pipe.lrange(f"{k}:log", -log_lines, -1)
            raw, live, evals, best, chart, length, maps, logn, log = pipe.execute()
        if raw is None:
            raise no_run(run_id)
        return {"run": Run.from_dict(json.loads(raw)), "live": live,
                "evaluations": by_iteration(evals), "best": loads(best),
                "chart": json.loads(chart) if chart else None, "metrics_count": int(length),
                "darknet_maps": [json.loads(x) for x in maps],
                "log": log, "log_total": int(logn or 0)}
