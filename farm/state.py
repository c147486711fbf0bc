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
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import redis

from farm.errors import FarmError, LeaseLost, NotFound, RedisUnreachable
from farm.runs.model import Run

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def only_match(prefix: str, ids: list[str], what: str, listing: str) -> str:
    """The one id that starts with `prefix`; NotFound when none or several do."""
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        raise NotFound(f"{prefix!r} matches {len(ids)} {what}s",
                       hint="give more of the id: " + ", ".join(ids[:5]))
    raise NotFound(f"no {what} {prefix!r}", hint=listing)


def _k(*parts: str) -> str:
    return "farm:" + ":".join(parts)


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Redis errors as the farm's own (for every module that keeps state in Redis)."""
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
        self._release = self.r.register_script(RELEASE_IF_OWNER)

    def ping(self) -> None:
        with translated(self.url):
            self.r.ping()

    # -- runs -------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        with translated(self.url):
            pipe = self.r.pipeline()
            pipe.set(_k("run", run.id), json.dumps(run.to_dict()))
            pipe.zadd(_k("runs"), {run.id: run.created_at})
            pipe.execute()

    def load_run(self, run_id: str) -> Run:
        with translated(self.url):
            raw = self.r.get(_k("run", run_id))
        if raw is None:
            raise NotFound(f"no run {run_id!r}", hint="`farm runs` lists the runs")
        return Run.from_dict(json.loads(raw))

    def run_ids(self, limit: int = 100) -> list[str]:
        with translated(self.url):
            return self.r.zrevrange(_k("runs"), 0, limit - 1)

    def load_runs(self, limit: int = 100) -> list[Run]:
        ids = self.run_ids(limit)
        if not ids:
            return []
        with translated(self.url):
            raws = self.r.mget([_k("run", i) for i in ids])
        return [Run.from_dict(json.loads(r)) for r in raws if r]

    def find_run(self, prefix: str) -> Run:
        """A run by id or by an unambiguous id prefix."""
        with translated(self.url):
            if self.r.exists(_k("run", prefix)):
                return self.load_run(prefix)
            ids = [i for i in self.r.zrange(_k("runs"), 0, -1) if i.startswith(prefix)]
        return self.load_run(only_match(prefix, ids, "run", "`farm runs` lists the runs"))

    # -- leases -----------------------------------------------------------------------
    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> str | None:
        """A token if this process now holds the run, None if another one does."""
        token = f"{owner}:{uuid.uuid4().hex[:8]}"
        with translated(self.url):
            ok = self.r.set(_k("run", run_id, "lease"), token, nx=True, px=int(ttl * 1000))
        return token if ok else None

    def renew_lease(self, run_id: str, token: str, ttl: float) -> None:
        with translated(self.url):
            ok = self._renew(keys=[_k("run", run_id, "lease")], args=[token, int(ttl * 1000)])
        if not ok:
            raise LeaseLost(f"run {run_id} is no longer held by {token}")

    def release_lease(self, run_id: str, token: str) -> None:
        with translated(self.url):
            self._release(keys=[_k("run", run_id, "lease")], args=[token])

    def lease_holder(self, run_id: str) -> str | None:
        with translated(self.url):
            return self.r.get(_k("run", run_id, "lease"))

    # -- cancel -----------------------------------------------------------------------
    def request_cancel(self, run_id: str) -> None:
        with translated(self.url):
            self.r.set(_k("run", run_id, "cancel"), str(time.time()))

    def cancel_requested(self, run_id: str) -> bool:
        with translated(self.url):
            return bool(self.r.exists(_k("run", run_id, "cancel")))

    # -- live metrics, mAP and log tail -----------------------------------------------
    def record_progress(self, run_id: str, attempt: int, iterations: list, lines: list[str],
                        now: float) -> None:
        """One round trip for everything darknet printed since the last call."""
        with translated(self.url):
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
        with translated(self.url):
            self.r.rpush(_k("run", run_id, "maps"), json.dumps(result))

    def maps(self, run_id: str) -> list[dict[str, Any]]:
        with translated(self.url):
            return [json.loads(x) for x in self.r.lrange(_k("run", run_id, "maps"), 0, -1)]

    def live(self, run_id: str) -> dict[str, str]:
        with translated(self.url):
            return self.r.hgetall(_k("run", run_id, "live"))

    def metrics(self, run_id: str, start: str = "-", count: int | None = None
                ) -> list[tuple[str, dict[str, str]]]:
        with translated(self.url):
            return self.r.xrange(_k("run", run_id, "metrics"), min=start, count=count)

    def recent_metrics(self, run_id: str, count: int = 300
                       ) -> list[tuple[str, dict[str, str]]]:
        """The newest `count` metric entries, oldest first (speed and ETA)."""
        with translated(self.url):
            return self.r.xrevrange(_k("run", run_id, "metrics"), count=count)[::-1]

    def log_since(self, run_id: str, seen: int = 0) -> tuple[list[str], int]:
        """Log lines after the first `seen` ever written (as far as the tail still holds
        them), and the new total to pass next time: what `farm logs -f` polls."""
        with translated(self.url):
            pipe = self.r.pipeline()
            pipe.get(_k("run", run_id, "logn"))
            pipe.lrange(_k("run", run_id, "log"), 0, -1)
            total, lines = pipe.execute()
        total = int(total or 0)
        first_held = total - len(lines)
        return lines[max(seen - first_held, 0):], total

    # =====================================================================================
    # Evaluations and best weights (farm.eval, farm.chart and the board)
    #
    #   run:<id>:evals   hash: iteration -> JSON evaluation of the checkpoint at it
    #   run:<id>:best    JSON of the best evaluation (score, iteration, weights, sha256, …)
    #   run:<id>:lasteval  JSON of the evaluation of the newest checkpoint evaluated so far
    #   run:<id>:chart   JSON: the metrics stream folded into chart buckets (farm.chart)
    #   run:<id>:evalsent  set of iterations whose evaluation was sent to the eval queue
    # =====================================================================================

    def mark_evaluation_sent(self, run_id: str, iteration: int) -> None:
        with translated(self.url):
            self.r.sadd(_k("run", run_id, "evalsent"), int(iteration))

    def evaluations_sent(self, run_id: str) -> set[int]:
        with translated(self.url):
            return {int(x) for x in self.r.smembers(_k("run", run_id, "evalsent"))}

    def pending_evaluations(self, run_id: str) -> set[int]:
        """Iterations whose evaluation was sent and is not recorded yet (one round trip)."""
        with translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.smembers(_k("run", run_id, "evalsent"))
            pipe.hkeys(_k("run", run_id, "evals"))
            sent, done = pipe.execute()
        return {int(x) for x in sent} - {int(x) for x in done}

    def record_evaluation(self, run_id: str, result: dict[str, Any],
                          score: float | None) -> bool:
        """Store an evaluation; True when it is now the run's best (a higher score, or the
        same score at a later iteration, like darknet's `>=`). Atomic, so evaluations that
        finish in any order on any worker agree on one best. `score` None: never best."""
        it = int(result["iteration"])
        doc = json.dumps(result)
        with translated(self.url):
            script = self.r.register_script(_RECORD_EVALUATION)  # cheap: a sha, no I/O
            return bool(script(
                keys=[_k("run", run_id, "evals"), _k("run", run_id, "best"),
                      _k("run", run_id, "lasteval")],
                args=[it, doc, "" if score is None else repr(float(score)),
                      json.dumps({**result, "score": score})]))

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        """Every evaluation of the run, by iteration."""
        with translated(self.url):
            raw = self.r.hvals(_k("run", run_id, "evals"))
        return sorted((json.loads(x) for x in raw), key=lambda e: e["iteration"])

    def best_evaluation(self, run_id: str) -> dict[str, Any] | None:
        with translated(self.url):
            raw = self.r.get(_k("run", run_id, "best"))
        return json.loads(raw) if raw else None

    def chart_state(self, run_id: str) -> tuple[dict[str, Any] | None, int]:
        """The folded chart (None before the first fold) and the stream's length."""
        with translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.get(_k("run", run_id, "chart"))
            pipe.xlen(_k("run", run_id, "metrics"))
            raw, length = pipe.execute()
        return (json.loads(raw) if raw else None), int(length)

    def save_chart_state(self, run_id: str, doc: dict[str, Any]) -> None:
        with translated(self.url):
            self.r.set(_k("run", run_id, "chart"), json.dumps(doc, separators=(",", ":")))

    def metrics_after(self, run_id: str, after: str, count: int
                      ) -> list[tuple[str, dict[str, str]]]:
        """Up to `count` metric entries after stream id `after` ("0-0": from the start)."""
        with translated(self.url):
            return self.r.xrange(_k("run", run_id, "metrics"), min=f"({after}", count=count)

    def board_runs(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest runs (as stored: plain dicts, not Run objects, which cost more than
        the rest together) with their live progress, best and newest evaluation. Two round
        trips however many runs there are (the board's runs list): one command, because
        redis-py spends more time packing 500 small commands than Redis answering them."""
        ids = self.run_ids(limit)
        if not ids:
            return []
        keys = [_k("run", i) + suffix for i in ids
                for suffix in ("", ":best", ":lasteval", ":live")]
        with translated(self.url):
            flat = self.r.register_script(_BOARD_ROWS)(keys=keys, args=_LIVE_FIELDS)
        rows = []
        for n in range(0, len(flat), 3 + len(_LIVE_FIELDS)):
            doc, best, last, *live = flat[n:n + 3 + len(_LIVE_FIELDS)]
            if doc:
                rows.append({"run": json.loads(doc), "live": dict(zip(_LIVE_FIELDS, live)),
                             "best": json.loads(best) if best else None,
                             "last_evaluation": json.loads(last) if last else None})
        return rows

    def board_run(self, run_id: str, log_lines: int = 200) -> dict[str, Any]:
        """Everything the run page shows, in one round trip."""
        key = _k("run", run_id)
        with translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.get(key)
            pipe.hgetall(f"{key}:live")
            pipe.hvals(f"{key}:evals")
            pipe.get(f"{key}:best")
            pipe.get(f"{key}:chart")
            pipe.xlen(f"{key}:metrics")
            pipe.lrange(f"{key}:maps", 0, -1)
            pipe.get(f"{key}:logn")
            pipe.lrange(f"{key}:log", -log_lines, -1)
            raw, live, evals, best, chart, length, maps, logn, log = pipe.execute()
        if raw is None:
            raise NotFound(f"no run {run_id!r}", hint="`farm runs` lists the runs")
        return {"run": Run.from_dict(json.loads(raw)), "live": live,
                "evaluations": sorted((json.loads(x) for x in evals),
                                      key=lambda e: e["iteration"]),
                "best": json.loads(best) if best else None,
                "chart": json.loads(chart) if chart else None, "metrics_count": int(length),
                "darknet_maps": [json.loads(x) for x in maps],
                "log": log, "log_total": int(logn or 0)}

    def log_tail(self, run_id: str, lines: int = 200) -> tuple[list[str], int]:
        """The last `lines` log lines and how many were ever written."""
        with translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.get(_k("run", run_id, "logn"))
            pipe.lrange(_k("run", run_id, "log"), -lines, -1)
            total, tail = pipe.execute()
        return tail, int(total or 0)


_LIVE_FIELDS = ("iteration", "avg_loss", "updated_at")

_BOARD_ROWS = """
local out = {}
for i = 1, #KEYS, 4 do
  out[#out + 1] = redis.call('GET', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1])
  out[#out + 1] = redis.call('GET', KEYS[i + 2])
  local live = redis.call('HMGET', KEYS[i + 3], unpack(ARGV))
  for j = 1, #ARGV do out[#out + 1] = live[j] end
end
return out
"""

_RECORD_EVALUATION = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local newest = redis.call('GET', KEYS[3])
if not newest or tonumber(cjson.decode(newest).iteration) <= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], ARGV[2])
end
if ARGV[3] == '' then return 0 end
local current = redis.call('GET', KEYS[2])
if current then
  local best = cjson.decode(current)
  local score, it = tonumber(ARGV[3]), tonumber(ARGV[1])
  local held = tonumber(best.score) or -1
  if score < held or (score == held and it <= tonumber(best.iteration)) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""


class LeaseRenewer(threading.Thread):
    """Calls `renew()` every third of `ttl` until stopped; a lease taken by another
    holder (LeaseLost) sets `lost` and ends it. A Redis blip is tried again: the TTL
    leaves two more chances."""

    def __init__(self, renew: Callable[[], Any], ttl: float, name: str):
        super().__init__(daemon=True, name=name)
        self.renew, self.ttl = renew, ttl
        self.lost = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost:
                self.lost.set()
                return
            except FarmError:
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.join()
