"""The farm's state in Redis: runs, leases, metrics and log tails.

The only module of farm/ that talks to Redis. Keys (prefix `farm:`):

    run:<id>            JSON document of the run (attempts, checkpoints, state)
    runs                sorted set of run ids by creation time
    run:<id>:live       hash: iteration, loss, avg_loss, rate, attempt, updated_at
    run:<id>:metrics    stream: one entry per iteration (a, i, loss, avg, rate, s)
    run:<id>:maps       list of JSON mAP results
    run:<id>:log        list: the last `log_tail_lines` lines of darknet's output
    run:<id>:logn       how many lines were ever appended to that list
    runs:running        set of the ids of runs that are running or held by a worker (what
                        the reaper reads: every such run, however old)
    run:<id>:lease      JSON naming the process that holds the run (worker, pid, its start
                        time and place, a nonce); expires without heartbeat
    run:<id>:cancel     set when a person asked to cancel the run
    supervisor:events   list (newest first, capped) of JSON events of `farm up`'s
                        supervisor: a child died, was restarted, was given up
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import redis
from redis import exceptions as rx
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from farm.errors import FarmError, LeaseLost, NotFound, RedisRefused, RedisUnreachable
from farm.procs import Pid
from farm.runs.model import Run, RunState

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_ACQUIRE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return 1 end  -- a retried call that got it
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('sadd', KEYS[2], ARGV[3])
  return 1
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
    except redis.RedisError as e:
        raise redis_unavailable(url, e) from None


def redis_unavailable(url: str, e: Exception) -> RedisUnreachable:
    """What a failure to talk to Redis at `url` means, with the URL (password masked)
    and what to check; for the CLI's edge too (Celery's own Redis errors land there)."""
    where = safe_url(url)
    if isinstance(e, (rx.AuthenticationError, rx.AuthorizationError)) or \
            (isinstance(e, rx.ResponseError) and "AUTH" in str(e)):
        return RedisRefused(f"Redis at {where} refused the login: {e}",
                            hint="check the password in FARM_REDIS_URL (the embedded "
                                 "farm's is in <data_dir>/redis.password)")
    if isinstance(e, rx.InvalidResponse) or "closed by server" in str(e):
        return RedisRefused(f"{where} answered, but not as Redis does ({e})",
                            hint="check the host and port in FARM_REDIS_URL: they name "
                                 "another kind of server (HTTP, SSH, ...); or that Redis "
                                 "was restarting: try again")
    if isinstance(e, (rx.ConnectionError, rx.TimeoutError)):
        return RedisUnreachable(f"cannot reach Redis at {where}: {e}",
                                hint="start the farm with `farm up`, or set FARM_REDIS_URL "
                                     "to a running Redis")
    return RedisUnreachable(f"Redis at {where} failed: {type(e).__name__}: {e}",
                            hint="check that FARM_REDIS_URL names the farm's Redis and that "
                                 "it is healthy (`redis-cli -u URL info`)")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class Store:
    """`patience`: seconds to keep retrying a Redis that went away (a worker riding out a
    restart of the embedded Redis); 0 fails at once (the CLI)."""

    def __init__(self, url: str, *, log_tail_lines: int = 2000, patience: float = 0.0):
        self.url = url
        retry = None
        if patience > 0:  # 0.1, 0.2, 0.4, 0.8, then every second
            retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), int(patience) + 4)
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30,
                                      socket_connect_timeout=5, health_check_interval=30,
                                      retry=retry)
        self.log_tail_lines = log_tail_lines
        self._renew = self.r.register_script(_RENEW)
        self._acquire = self.r.register_script(_ACQUIRE)
        self._release = self.r.register_script(RELEASE_IF_OWNER)

    def ping(self) -> None:
        with translated(self.url):
            self.r.ping()

    # -- runs -------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        with translated(self.url):
            pipe = self.r.pipeline()
            _write_run(pipe, run)
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
        """A token if this process now holds the run, None if another one does. The run
        joins the running set at once: a holder that dies before it marks the run running
        is found by the reaper too."""
        token = json.dumps({"worker": owner, **Pid.this().to_dict(),
                            "nonce": uuid.uuid4().hex[:8]})
        with translated(self.url):
            ok = self._acquire(keys=[_k("run", run_id, "lease"), _RUNNING],
                               args=[token, int(ttl * 1000), run_id])
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

    # -- the running set (what the reaper reads) -------------------------------------
    def running_leases(self) -> dict[str, str | None]:
        """Every run in the running set, with its lease (None: no one holds it). Two
        round trips however many runs were ever made."""
        with translated(self.url):
            if not self.r.exists(_RUNNING_INDEXED):
                self._index_running()
            ids = sorted(self.r.smembers(_RUNNING))
            leases = self.r.mget([_k("run", i, "lease") for i in ids]) if ids else []
        return dict(zip(ids, leases))

    def _index_running(self) -> None:
        """Fill the running set from every run doc, once (Redis data older than the set)."""
        ids = self.r.zrange(_k("runs"), 0, -1)
        for n in range(0, len(ids), 500):
            chunk = ids[n:n + 500]
            for run_id, raw in zip(chunk, self.r.mget([_k("run", i) for i in chunk])):
                if raw and json.loads(raw).get("state") == RunState.RUNNING.value:
                    self.r.sadd(_RUNNING, run_id)
        self.r.set(_RUNNING_INDEXED, "1")

    def requeue_lost(self, run_id: str, holder: str | None, task_id: str,
                     message: str) -> Run | None:
        """Mark a run whose holder is gone as queued again under `task_id`, atomically:
        only while its lease is still `holder` (None: no lease) and the run unfinished;
        the dead holder's lease is deleted in the same step. None when anything changed
        meanwhile (another reaper, the run ended): then nothing is written."""
        run_key, lease_key = _k("run", run_id), _k("run", run_id, "lease")
        with translated(self.url), self.r.pipeline() as pipe:
            try:
                pipe.watch(run_key, lease_key)
                raw = pipe.get(run_key)
                if pipe.get(lease_key) != holder:
                    return None
                run = Run.from_dict(json.loads(raw)) if raw else None
                pipe.multi()
                if run is None or run.state.finished:
                    pipe.srem(_RUNNING, run_id)  # a stale member: nothing to resume
                    pipe.execute()
                    return None
                run.state, run.task_id, run.message = RunState.QUEUED, task_id, message
                if holder is not None:
                    pipe.delete(lease_key)
                _write_run(pipe, run)
                pipe.execute()
                return run
            except redis.WatchError:
                return None

    # -- supervisor events (`farm up`) ------------------------------------------------
    def record_supervisor_events(self, events: list[dict[str, Any]]) -> None:
        """Keep `farm up`'s events (a child died, restarted, given up) for the board."""
        if not events:
            return
        with translated(self.url):
            pipe = self.r.pipeline()
            pipe.lpush(_SUPERVISOR_EVENTS, *(json.dumps(e) for e in events))
            pipe.ltrim(_SUPERVISOR_EVENTS, 0, SUPERVISOR_EVENTS_KEPT - 1)
            pipe.execute()

    def supervisor_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` supervisor events, newest first; each has `at` (unix time),
        `child` (a child of `farm up`, or "farm" for the farm itself), `event` (up, down,
        died, restarted, gave_up), `pid`, `code` (exit code; -N: killed by signal N) and
        `message`."""
        with translated(self.url):
            raw = self.r.lrange(_SUPERVISOR_EVENTS, 0, limit - 1)
        return [json.loads(x) for x in raw]

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
    # Evaluations and best weights (farm.eval, farm.runs.chart and the board)
    #
    #   run:<id>:evals   hash: iteration -> JSON evaluation of the checkpoint at it
    #   run:<id>:best    JSON of the best evaluation (score, iteration, weights, sha256, …)
    #   run:<id>:lasteval  JSON of the evaluation of the newest checkpoint evaluated so far
    #   run:<id>:chart   JSON: the metrics stream folded into chart buckets (farm.runs.chart)
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
        """The last `lines` log lines and how many were ever written (NotFound for a run
        that does not exist: an empty log would say it exists and printed nothing)."""
        with translated(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.exists(_k("run", run_id))
            pipe.get(_k("run", run_id, "logn"))
            pipe.lrange(_k("run", run_id, "log"), -lines, -1)
            exists, total, tail = pipe.execute()
        if not exists:
            raise NotFound(f"no run {run_id!r}", hint="`farm runs` lists the runs")
        return tail, int(total or 0)

    def require_run(self, run_id: str) -> None:
        """NotFound unless the run exists (for reads that would answer empty otherwise)."""
        with translated(self.url):
            if not self.r.exists(_k("run", run_id)):
                raise NotFound(f"no run {run_id!r}", hint="`farm runs` lists the runs")


_LIVE_FIELDS = ("iteration", "avg_loss", "updated_at")
_RUNNING = _k("runs", "running")
_RUNNING_INDEXED = _k("runs", "running", "indexed")
_SUPERVISOR_EVENTS = _k("supervisor", "events")
#: Supervisor events kept in Redis (the oldest are dropped).
SUPERVISOR_EVENTS_KEPT = 500


def _write_run(pipe, run: Run) -> None:
    """The one writer of run docs: the doc, the index by creation time, and the running
    set (a member exactly while the run is running)."""
    pipe.set(_k("run", run.id), json.dumps(run.to_dict()))
    pipe.zadd(_k("runs"), {run.id: run.created_at})
    if run.state is RunState.RUNNING:
        pipe.sadd(_RUNNING, run.id)
    else:
        pipe.srem(_RUNNING, run.id)


def lease_pid(holder: str | None) -> Pid | None:
    """The process a lease names (None: no lease, or one written before leases named
    their process)."""
    try:
        return Pid.from_dict(json.loads(holder)) if holder else None
    except (ValueError, KeyError, TypeError):
        return None

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
