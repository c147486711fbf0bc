"""What a run prints while it trains, in Redis: live figures, the metrics stream, the
mAP darknet prints itself, the log tail, and the chart folded from the stream. Keys:

    farm:run:<id>:live       hash: iteration, loss, avg_loss, rate, attempt, updated_at
    farm:run:<id>:metrics    stream: one entry per iteration (a, i, loss, avg, rate, s, t)
    farm:run:<id>:maps       list of JSON mAP results darknet printed (`-map`)
    farm:run:<id>:log        list: the last `log_tail_lines` lines of darknet's output
    farm:run:<id>:logn       how many lines were ever appended to that list
    farm:run:<id>:chart      JSON: the metrics stream folded into chart buckets (farm.runs.chart)
"""
from __future__ import annotations

import json
from typing import Any

from farm.store.redis import Connection, key
from farm.store.runs import no_run

Entries = list[tuple[str, dict[str, str]]]


class ProgressStore:
    def __init__(self, db: Connection, log_tail_lines: int = 2000):
        self.db = db
        self.log_tail_lines = log_tail_lines

    def record(self, run_id: str, attempt: int, iterations: list, lines: list[str],
               now: float) -> None:
        """One round trip for everything darknet printed since the last call."""
        with self.db.translated():
            pipe = self.db.r.pipeline(transaction=False)
            for it in iterations:
                pipe.xadd(key("run", run_id, "metrics"),
                          {"a": attempt, "i": it.number, "loss": repr(it.loss),
                           "avg": repr(it.avg_loss), "rate": repr(it.rate),
                           "s": "" if it.seconds is None else repr(it.seconds),
                           "t": f"{now:.3f}"})
            if iterations:
                last = iterations[-1]
                pipe.hset(key("run", run_id, "live"), mapping={
                    "attempt": attempt, "iteration": last.number, "loss": repr(last.loss),
                    "avg_loss": repr(last.avg_loss), "rate": repr(last.rate),
                    "updated_at": f"{now:.3f}"})
            if lines:
                pipe.rpush(key("run", run_id, "log"), *lines)
                pipe.ltrim(key("run", run_id, "log"), -self.log_tail_lines, -1)
                pipe.incrby(key("run", run_id, "logn"), len(lines))
            pipe.execute()

    def record_map(self, run_id: str, result: dict[str, Any]) -> None:
        """A mAP block darknet printed while training (attempt, iteration, map, iou)."""
        with self.db.translated():
            self.db.r.rpush(key("run", run_id, "maps"), json.dumps(result))

    def maps(self, run_id: str) -> list[dict[str, Any]]:
        with self.db.translated():
            return [json.loads(x) for x in self.db.r.lrange(key("run", run_id, "maps"), 0, -1)]

    def live(self, run_id: str) -> dict[str, str]:
        with self.db.translated():
            return self.db.r.hgetall(key("run", run_id, "live"))

    def metrics(self, run_id: str, start: str = "-", count: int | None = None) -> Entries:
        with self.db.translated():
            return self.db.r.xrange(key("run", run_id, "metrics"), min=start, count=count)

    def recent_metrics(self, run_id: str, count: int = 300) -> Entries:
        """The newest `count` metric entries, oldest first (speed and ETA)."""
        with self.db.translated():
            return self.db.r.xrevrange(key("run", run_id, "metrics"), count=count)[::-1]

    def metrics_after(self, run_id: str, after: str, count: int) -> Entries:
        """Up to `count` metric entries after stream id `after` ("0-0": from the start)."""
        with self.db.translated():
            return self.db.r.xrange(key("run", run_id, "metrics"), min=f"({after}",
                                    count=count)

    def log_since(self, run_id: str, seen: int = 0) -> tuple[list[str], int]:
        """Log lines after the first `seen` ever written (as far as the tail still holds
        them), and the new total to pass next time: what `farm logs -f` polls."""
        with self.db.translated():
            pipe = self.db.r.pipeline()
            pipe.get(key("run", run_id, "logn"))
            pipe.lrange(key("run", run_id, "log"), 0, -1)
            total, lines = pipe.execute()
        total = int(total or 0)
        first_held = total - len(lines)
        return lines[max(seen - first_held, 0):], total

    def log_tail(self, run_id: str, lines: int = 200) -> tuple[list[str], int]:
        """The last `lines` log lines and how many were ever written (NotFound for a run
        that does not exist: an empty log would say it exists and printed nothing)."""
        with self.db.translated():
            pipe = self.db.r.pipeline(transaction=False)
            pipe.exists(key("run", run_id))
            pipe.get(key("run", run_id, "logn"))
            pipe.lrange(key("run", run_id, "log"), -lines, -1)
            exists, total, tail = pipe.execute()
        if not exists:
            raise no_run(run_id)
        return tail, int(total or 0)

    # -- the folded chart (farm.runs.chart) ----------------------------------------------------
    def chart_state(self, run_id: str) -> tuple[dict[str, Any] | None, int]:
        """The folded chart (None before the first fold) and the stream's length."""
        with self.db.translated():
            pipe = self.db.r.pipeline(transaction=False)
            pipe.get(key("run", run_id, "chart"))
            pipe.xlen(key("run", run_id, "metrics"))
            raw, length = pipe.execute()
        return (json.loads(raw) if raw else None), int(length)

    def save_chart_state(self, run_id: str, doc: dict[str, Any]) -> None:
        with self.db.translated():
            self.db.r.set(key("run", run_id, "chart"), json.dumps(doc, separators=(",", ":")))
