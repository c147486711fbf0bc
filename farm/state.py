"""The farm's state in Redis: runs, leases, metrics and log tails.

The only module of farm/ that talks to Redis. Keys (prefix `farm:`):

    run:<id>            JSON document of the run (attempts, checkpoints, state)
    runs                sorted set of run ids by creation time
    run:<id>:live       hash: iteration, loss, avg_loss, rate, attempt, updated_at
    run:<id>:metrics    stream: one entry per iteration (a, i, loss, avg, rate, s)
    run:<id>:maps       list of JSON mAP results
    run:<id>:log        list: the last `log_tail_lines` lines of darknet's output
    run:<id>:logn       how many lines were ever appended to that list
    run:<id>:lease      token of the process that holds the run (expires without heartbeat)
    run:<id>:cancel     set when a person asked to cancel the run
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import redis

from farm.errors import LeaseLost, NotFound, RedisUnreachable
from farm.runs.model import Run

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def _k(*parts: str) -> str:
    return "farm:" + ":".join(parts)


@contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise RedisUnreachable(
            f"cannot reach Redis at {_safe(url)}: {e}",
            hint="start the farm with `farm up`, or set FARM_REDIS_URL to a running "
                 "Redis") from None
    except redis.AuthenticationError:
        raise RedisUnreachable(f"Redis at {_safe(url)} refused the password",
                               hint="check the password in FARM_REDIS_URL") from None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class Store:
    def __init__(self, url: str, *, log_tail_lines: int = 2000):
        self.url = url
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30,
                                      socket_connect_timeout=5, health_check_interval=30)
        self.log_tail_lines = log_tail_lines
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    def ping(self) -> None:
        with _translated(self.url):
            self.r.ping()

    # -- runs -------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        with _translated(self.url):
            pipe = self.r.pipeline()
            pipe.set(_k("run", run.id), json.dumps(run.to_dict()))
            pipe.zadd(_k("runs"), {run.id: run.created_at})
            pipe.execute()

    def load_run(self, run_id: str) -> Run:
        with _translated(self.url):
            raw = self.r.get(_k("run", run_id))
        if raw is None:
            raise NotFound(f"no run {run_id!r}", hint="`farm runs` lists the runs")
        return Run.from_dict(json.loads(raw))

    def run_ids(self, limit: int = 100) -> list[str]:
        with _translated(self.url):
            return self.r.zrevrange(_k("runs"), 0, limit - 1)

    def load_runs(self, limit: int = 100) -> list[Run]:
        ids = self.run_ids(limit)
        if not ids:
            return []
        with _translated(self.url):
            raws = self.r.mget([_k("run", i) for i in ids])
        return [Run.from_dict(json.loads(r)) for r in raws if r]

    def find_run(self, prefix: str) -> Run:
        """A run by id or by an unambiguous id prefix."""
        with _translated(self.url):
            if self.r.exists(_k("run", prefix)):
                return self.load_run(prefix)
            ids = [i for i in self.r.zrange(_k("runs"), 0, -1) if i.startswith(prefix)]
        if len(ids) == 1:
            return self.load_run(ids[0])
        if len(ids) > 1:
            raise NotFound(f"{prefix!r} matches {len(ids)} runs",
                           hint="give more of the id: " + ", ".join(ids[:5]))
        raise NotFound(f"no run {prefix!r}", hint="`farm runs` lists the runs")

    # -- leases -----------------------------------------------------------------------
    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> str | None:
        """A token if this process now holds the run, None if another one does."""
        token = f"{owner}:{uuid.uuid4().hex[:8]}"
        with _translated(self.url):
            ok = self.r.set(_k("run", run_id, "lease"), token, nx=True, px=int(ttl * 1000))
        return token if ok else None

    def renew_lease(self, run_id: str, token: str, ttl: float) -> None:
        with _translated(self.url):
            ok = self._renew(keys=[_k("run", run_id, "lease")], args=[token, int(ttl * 1000)])
        if not ok:
            raise LeaseLost(f"run {run_id} is no longer held by {token}")

    def release_lease(self, run_id: str, token: str) -> None:
        with _translated(self.url):
            self._release(keys=[_k("run", run_id, "lease")], args=[token])

    def lease_holder(self, run_id: str) -> str | None:
        with _translated(self.url):
            return self.r.get(_k("run", run_id, "lease"))

    # -- cancel -----------------------------------------------------------------------
    def request_cancel(self, run_id: str) -> None:
        with _translated(self.url):
            self.r.set(_k("run", run_id, "cancel"), str(time.time()))

    def cancel_requested(self, run_id: str) -> bool:
        with _translated(self.url):
            return bool(self.r.exists(_k("run", run_id, "cancel")))

    # -- live metrics, mAP and log tail -----------------------------------------------
    def record_progress(self, run_id: str, attempt: int, iterations: list, lines: list[str],
                        now: float) -> None:
        """One round trip for everything darknet printed since the last call."""
        with _translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            for it in iterations:
                pipe.xadd(_k("run", run_id, "metrics"),
                          {"a": attempt, "i": it.number, "loss": repr(it.loss),
                           "avg": repr(it.avg_loss), "rate": repr(it.rate),
                           "s": "" if it.seconds is None else repr(it.seconds),
                           "t": f"{now:.3f}"})
            if iterations:
                last = iterations[-1]
                pipe.hset(_k("run", run_id, "live"), mapping={
                    "attempt": attempt, "iteration": last.number, "loss": repr(last.loss),
                    "avg_loss": repr(last.avg_loss), "rate": repr(last.rate),
                    "updated_at": f"{now:.3f}"})
            if lines:
                pipe.rpush(_k("run", run_id, "log"), *lines)
                pipe.ltrim(_k("run", run_id, "log"), -self.log_tail_lines, -1)
                pipe.incrby(_k("run", run_id, "logn"), len(lines))
            pipe.execute()

    def record_map(self, run_id: str, result: dict[str, Any]) -> None:
        with _translated(self.url):
            self.r.rpush(_k("run", run_id, "maps"), json.dumps(result))

    def maps(self, run_id: str) -> list[dict[str, Any]]:
        with _translated(self.url):
            return [json.loads(x) for x in self.r.lrange(_k("run", run_id, "maps"), 0, -1)]

    def live(self, run_id: str) -> dict[str, str]:
        with _translated(self.url):
            return self.r.hgetall(_k("run", run_id, "live"))

    def metrics(self, run_id: str, start: str = "-", count: int | None = None
                ) -> list[tuple[str, dict[str, str]]]:
        with _translated(self.url):
            return self.r.xrange(_k("run", run_id, "metrics"), min=start, count=count)

    def log_since(self, run_id: str, seen: int = 0) -> tuple[list[str], int]:
        """Log lines after the first `seen` ever written (as far as the tail still holds
        them), and the new total to pass next time: what `farm logs -f` polls."""
        with _translated(self.url):
            pipe = self.r.pipeline()
            pipe.get(_k("run", run_id, "logn"))
            pipe.lrange(_k("run", run_id, "log"), 0, -1)
            total, lines = pipe.execute()
        total = int(total or 0)
        first_held = total - len(lines)
        return lines[max(seen - first_held, 0):], total
