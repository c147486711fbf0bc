"""The farm's one door to Redis: the client, the farm's key names, and Redis errors
turned into the farm's own.

The only module of the project that imports redis (tests/unit/test_layers.py). The
stores beside it (one per noun) use the client it holds, inside `translated()`, so no
redis exception ever climbs above farm/store/: callers see RedisUnreachable or
RedisRefused with the URL (password masked) and what to check.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import redis
from redis import exceptions as rx
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from farm.errors import NotFound, RedisRefused, RedisUnreachable

T = TypeVar("T")

#: Seconds a command may wait for Redis's answer (a big pipeline of the board included).
SOCKET_TIMEOUT = 30
#: Seconds to wait for a connection to Redis before it counts as unreachable.
CONNECT_TIMEOUT = 5
#: Seconds a pooled connection may sit idle before it is checked with a PING first.
HEALTH_CHECK_INTERVAL = 30


def key(*parts: str | int) -> str:
    """The farm's name for a Redis key: `farm:` and the parts joined by `:`."""
    return "farm:" + ":".join(str(p) for p in parts)


class Connection:
    """One Redis client for one URL, and the Lua scripts registered on it.

    `patience`: seconds to keep retrying a Redis that went away (a worker riding out a
    restart of the embedded Redis); 0 fails at once (the CLI)."""

    def __init__(self, url: str, *, patience: float = 0.0):
        self.url = url
        retry = None
        if patience > 0:  # 0.1, 0.2, 0.4, 0.8, then every second
            retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), int(patience) + 4)
        #: the redis-py client (decoded strings); used inside `translated()` only
        self.r = redis.Redis.from_url(url, decode_responses=True,
                                      socket_timeout=SOCKET_TIMEOUT,
                                      socket_connect_timeout=CONNECT_TIMEOUT,
                                      health_check_interval=HEALTH_CHECK_INTERVAL,
                                      retry=retry)
        self._scripts: dict[str, Callable] = {}

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Redis errors raised inside as the farm's own (RedisUnreachable, RedisRefused)."""
        try:
            yield
        except redis.RedisError as e:
            raise redis_unavailable(self.url, e) from None

    def ping(self) -> None:
        with self.translated():
            self.r.ping()

    def script(self, source: str) -> Callable:
        """A Lua script of farm.store.scripts, registered once (EVALSHA, loaded on first
        use)."""
        if source not in self._scripts:
            self._scripts[source] = self.r.register_script(source)
        return self._scripts[source]

    def watching(self, keys: list[str], body: Callable[[object], T], conflict: T) -> T:
        """Optimistic transaction: `body(pipe)` reads with `keys` WATCHed, then calls
        pipe.multi(), queues its writes and pipe.execute(). Returns what body returns, or
        `conflict` when a watched key changed meanwhile (nothing was written then)."""
        with self.translated(), self.r.pipeline() as pipe:
            try:
                pipe.watch(*keys)
                return body(pipe)
            except redis.WatchError:
                return conflict

    def find_id(self, prefix: str, index: str, doc: Callable[[str], str], what: str,
                listing: str) -> str:
        """The id of a document by its whole id or an unambiguous prefix of one: `index`
        is the sorted set of ids, `doc(id)` the document's key; NotFound otherwise."""
        with self.translated():
            if self.r.exists(doc(prefix)):
                return prefix
            ids = [i for i in self.r.zrange(index, 0, -1) if i.startswith(prefix)]
        return only_match(prefix, ids, what, listing)


def only_match(prefix: str, ids: list[str], what: str, listing: str) -> str:
    """The one id that starts with `prefix`; NotFound when none or several do."""
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        raise NotFound(f"{prefix!r} matches {len(ids)} {what}s",
                       hint="give more of the id: " + ", ".join(ids[:5]))
    raise NotFound(f"no {what} {prefix!r}", hint=listing)


def is_redis_error(e: BaseException | None) -> bool:
    """Whether `e` is redis-py's (for the CLI's edge, where Celery's own Redis errors
    land without passing through a store)."""
    return isinstance(e, redis.RedisError)


def redis_unavailable(url: str, e: BaseException) -> RedisUnreachable:
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
