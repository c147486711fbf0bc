"""Notifications: a JSON POST to `notify_url` when a sweep ends, a run fails or a host
goes away.

The events are built here, without Celery; workers/tasks/notify.py posts them from a
`cpu` worker, so training never waits for the receiver. Each event has an id made of
what happened (`run.failed:r…`, `sweep.ended:s…`, `host.away:lily2:…`), claimed once in
Redis (farm.store.notices) by whoever sees it first: a retried task, or two workers seeing one end,
queue it once. Its delivery is recorded beside it (a redelivered message finds it
delivered and posts nothing). The receiver gets the id in the payload and in the
`Idempotency-Key` header, to drop the one duplicate that a worker dying between a POST
and its record could still make.
"""
from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from farm.errors import DeliveryFailed
from farm.urls import mask_url

#: Bytes of a receiver's answer read (and dropped): enough to finish the exchange.
ANSWER_LIMIT = 65536


def iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(frozen=True)
class Event:
    id: str
    kind: str        # sweep.ended | run.failed | host.away
    at: float
    text: str        # one line for people (chat webhooks show `text`)
    data: dict[str, Any]

    def payload(self, source: str) -> dict[str, Any]:
        """What is POSTed (README, "Notifications"); `source`: the host that saw it."""
        return {"id": self.id, "event": self.kind, "at": iso(self.at), "farm": source,
                "text": self.text, **self.data}


# ---------------------------------------------------------------------------------------
# The events


def sweep_ended(sweep, spec, rows, now: float | None = None) -> Event:
    """`sweep` (farm.sweeps.model.Sweep) has ended; `rows`: its leaderboard."""
    from farm.sweeps import controller as ctl
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    top = rows[0] if rows and rows[0].best is not None else None
    best = None if top is None else {
        "trial": top.trial, "run_id": top.run_id, "params": top.params,
        "objective": spec.objective, "value": top.best, "iteration": top.best_iteration}
    name = sweep.name or sweep.id
    return Event(
        id=f"sweep.ended:{sweep.id}", kind="sweep.ended", at=now or sweep.ended_at or time.time(),
        text=f"sweep {sweep.id} ({name}) {sweep.state.value}: {sweep.message}",
        data={"sweep": {
            "id": sweep.id, "name": name, "state": sweep.state.value,
            "message": sweep.message, "trials": len(rows), "counts": counts,
            "objective": spec.objective, "objective_label": ctl.objective_label(spec.objective),
            "best": best, "created_at": iso(sweep.created_at), "ended_at": iso(sweep.ended_at),
            "wall_seconds": None if sweep.ended_at is None
            else round(sweep.ended_at - sweep.created_at, 1),
            "report": f"farm sweep report {sweep.id} -o report.html"}})


def run_failed(run, now: float | None = None) -> Event:
    """`run` (farm.runs.model.Run) ended failed."""
    last = run.current
    where = f" (sweep {run.sweep}#{run.trial})" if run.sweep else ""
    return Event(
        id=f"run.failed:{run.id}", kind="run.failed", at=now or run.ended_at or time.time(),
        text=f"run {run.id}{where} failed: {run.message}",
        data={"run": {
            "id": run.id, "sweep": run.sweep, "trial": run.trial, "message": run.message,
            "attempts": len(run.attempts),
            "outcomes": [a.outcome.value if a.outcome else None for a in run.attempts],
            "iteration": run.last_iteration, "max_batches": run.max_batches,
            "host": last.host if last else None, "worker": run.worker,
            "created_at": iso(run.created_at), "ended_at": iso(run.ended_at)}})


def host_away(host: str, error: str, since: float, seen_by: dict[str, Any],
              now: float | None = None) -> Event:
    """A task found `host` unreachable; `since`: when this outage was first seen (its
    id: tasks that keep retrying during one outage make one event)."""
    return Event(
        id=f"host.away:{host}:{int(since)}", kind="host.away", at=now or time.time(),
        text=f"host {host} is away: {error}",
        data={"host": {"name": host, "error": error, "since": iso(since),
                       "seen_by": seen_by}})


# ---------------------------------------------------------------------------------------
# The POST


def post(url: str, payload: dict[str, Any], timeout: float) -> int:
    """POST `payload` as JSON; the HTTP status (2xx). DeliveryFailed otherwise, its
    message naming the URL masked. No redirect is followed (a POST must not turn into
    something else on the way)."""
    u = urlsplit(url)
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "darknet-farm notify",
               "Idempotency-Key": str(payload.get("id", ""))}
    if u.username is not None:
        pair = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read(ANSWER_LIMIT)
    except (OSError, http.client.HTTPException) as e:
        raise DeliveryFailed(f"{mask_url(url)}: {e or type(e).__name__}",
                             hint="check that the receiver is up") from None
    finally:
        conn.close()
    if not 200 <= answer.status < 300:
        raise DeliveryFailed(f"{mask_url(url)} answered HTTP {answer.status} {answer.reason}")
    return answer.status


def backoff(tries: int, base: float, cap: float) -> float:
    """Seconds to wait after `tries` failed POSTs (1, 2, …): base, 2 base, 4 base … cap."""
    return min(cap, base * 2 ** max(tries - 1, 0))
