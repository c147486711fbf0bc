"""`farm up`: a whole farm on one machine, in the foreground, supervised.

It starts, as child processes: a `redis-server` with AOF persistence and a generated
password under the data dir (unless FARM_REDIS_URL names an existing Redis), `gpu`
workers (concurrency 1, no prefetch), a `cpu` worker (also `augment`, `eval`), beat,
Flower behind a login, and the farm board behind the same login. A child that dies is
restarted (workers.supervision); the farm stops only when asked (Ctrl-C, SIGTERM,
`farm down`). Secrets reach the children through 0600 files and their environment,
never their command lines (`ps` shows every process's arguments to every user).
Every worker also listens on `host.<name>`, so more machines can join the same Redis.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import click

from farm.credentials import FLOWER_PASSWORD, METRICS_TOKEN, ensure_secret
from farm.errors import FarmError, FarmUnavailable, PortInUse, RedisRefused
from farm import queues
from farm.queues import WorkerSpec
from farm.settings import Settings
from farm.store import Store
from farm.store.redis import safe_url
from workers.supervision import ChildSpec, Children, claim, describe_exit

FLOWER_USER = "farm"
#: Supervisor events held in memory while Redis cannot take them (the oldest dropped).
EVENTS_HELD = 500
#: Seconds between two looks at the children.
TICK = 0.2


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _require_port(host: str, port: int, what: str, setting: str) -> None:
    if not port_free(host, port):
        raise PortInUse(f"port {port} on {host} is in use; {what} cannot start there",
                        hint=f"stop what uses it (`ss -ltnp 'sport = :{port}'`) or set "
                             f"{setting} to a free port")




def flower_password(data_dir: Path) -> tuple[str, bool]:
    """Flower's (and the board's) password, made once and kept 0600; True when it was
    just made."""
    return ensure_secret(data_dir / FLOWER_PASSWORD)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_config(s: Settings, redis_dir: Path) -> Path:
    """The embedded Redis's config file (0600: it holds the password), rewritten at each
    start. AOF: queued runs, leases and run state come back after a crash."""
    password, _ = ensure_secret(s.redis_password_file)
    path = redis_dir / "redis.conf"
    text = "\n".join([
        "# written by `farm up` at each start; edits are lost",
        f"port {s.redis_port}", "bind 127.0.0.1", f"dir {_quoted(str(redis_dir))}",
        "appendonly yes", "save 300 1", "maxmemory-policy noeviction",
        f"requirepass {_quoted(password)}", ""])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def owner_only(folder: Path, pattern: str) -> None:
    """`folder` and what matches `pattern` in it (and below) readable by their owner
    alone: files an older `farm up` left world-readable are closed too."""
    folder.chmod(0o700 if pattern == "*" else folder.stat().st_mode & 0o7777)
    for path in folder.rglob(pattern):
        path.chmod(0o700 if path.is_dir() else 0o600)


def celery_argv(*args: str) -> list[str]:
    return queues.celery_argv(sys.executable, *args)


def worker_argv(role: str, s: Settings, listens: tuple[str, ...], concurrency: int) -> list[str]:
    """`role`'s worker on this machine: `listens` and the host's own queue."""
    return WorkerSpec(s.host_name, role, listens + (queues.host_queue(s.host_name),),
                      concurrency).argv(sys.executable)


def gpu_roles(s: Settings) -> list[str]:
    """Node names of the gpu workers: `gpu` alone, or `gpu0`, `gpu1`, ..."""
    return ["gpu"] if s.gpu_workers == 1 else [f"gpu{i}" for i in range(s.gpu_workers)]


def record_path(data_dir: Path) -> Path:
    """`farm up`'s pid and its children's, for `farm down` and the next `farm up`."""
    return Path(data_dir) / "farm-up.pid"


class EmbeddedFarm:
    def __init__(self, settings: Settings, *, flower: bool = True, beat: bool = True,
                 echo=click.echo):
        self.s = settings
        self.data_dir = Path(settings.data_dir)
        self.flower = flower
        self.beat = beat
        self.echo = echo
        self.logs = self.data_dir / "logs"
        self.record = record_path(self.data_dir)
        self.children = Children(settings, self.logs, self.record,
                                 cwd=str(Path(__file__).resolve().parents[1]), echo=echo)
        self._store: Store | None = None
        self._claimed = False

    # -- start ------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can be known before starting anything."""
        from farm.darknet.dialect import detect
        detect(self.s.darknet, self.s.darknet_dialect)
        if self.s.embedded:
            if shutil.which("redis-server") is None:
                raise FarmUnavailable("redis-server not found",
                                      hint="apt-get install redis-server, or set FARM_REDIS_URL")
            _require_port("127.0.0.1", self.s.redis_port, "the embedded Redis", "FARM_REDIS_PORT")
        if self.flower:
            _require_port(self.s.flower_address, self.s.flower_port, "Flower", "FARM_FLOWER_PORT")
            _require_port(self.s.flower_address, self.s.board_port, "the board", "FARM_BOARD_PORT")

    def start(self) -> None:
        """Start every child; on any failure, stop what was started and raise."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        claim(self.record, self.echo)
        self.children.write_record()
        self._claimed = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.check()
        spawn = self.children.spawn
        if self.s.embedded:
            redis_dir = self.data_dir / "redis"
            redis_dir.mkdir(exist_ok=True)
            owner_only(redis_dir, "*")
            # SIGTERM when `farm up` dies: Redis flushes its AOF and exits
            spawn(ChildSpec("redis", ["redis-server", str(redis_config(self.s, redis_dir))],
                            death_signal=signal.SIGTERM, umask=0o077))
        self._wait_redis()
        for role in gpu_roles(self.s):
            spawn(ChildSpec(f"worker-{role}", worker_argv(role, self.s, (queues.GPU,), 1),
                            stop_signal=signal.SIGQUIT))
        cpu_roles = (queues.CPU, queues.AUGMENT, queues.EVAL)
        spawn(ChildSpec("worker-cpu", worker_argv("cpu", self.s, cpu_roles, 2),
                        stop_signal=signal.SIGQUIT))
        if self.beat:
            spawn(ChildSpec("beat", celery_argv("beat", "-s", str(self.data_dir / "beat-schedule"),
                                                "-l", "INFO")))
        if self.flower:
            password, fresh = flower_password(self.data_dir)
            owner_only(self.data_dir, "flower.db*")  # the tasks' arguments and results
            spawn(ChildSpec("flower", celery_argv(
                "flower", f"--address={self.s.flower_address}", f"--port={self.s.flower_port}",
                "--persistent=True", f"--db={self.data_dir / 'flower.db'}",
                "--state_save_interval=60000", "--purge_offline_workers=3600"),
                env={"FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{password}"}, umask=0o077))
            token, made = ensure_secret(self.data_dir / METRICS_TOKEN, 24)
            spawn(ChildSpec("board", [sys.executable, "-m", "dashboard"]))
            url = f"http://{self.s.flower_address}:{self.s.flower_port}/"
            self.echo(f"board:  http://{self.s.flower_address}:{self.s.board_port}/  (same login)")
            where = self.data_dir / METRICS_TOKEN
            self.echo(f"metrics: http://{self.s.flower_address}:{self.s.board_port}/metrics  "
                      + (f"bearer token {token} (shown once; kept in {where})" if made
                         else f"bearer token in {where}"))
            if fresh:
                self.echo(f"Flower: {url}  login {FLOWER_USER} / {password} "
                          f"(shown once; kept in {self.data_dir / 'flower.password'})")
            else:
                self.echo(f"Flower: {url}  login {FLOWER_USER} / see {self.data_dir / 'flower.password'}")

    def _wait_redis(self, timeout: float = 20) -> None:
        store = Store(self.s.effective_redis_url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                store.ping()
                self._store = store
                return
            except RedisRefused:
                raise  # something answered, but not Redis: waiting will not help
            except FarmError:
                if self.children.dead_before_ready() or time.monotonic() > deadline:
                    raise FarmUnavailable(
                        f"Redis did not come up at {safe_url(store.url)}",
                        hint=f"see {self.logs / 'redis.log'}") from None
                time.sleep(0.1)

    def wait_workers(self, timeout: float = 60) -> None:
        """Block until every worker answers a ping (a farm that accepts work)."""
        from workers.app import app, configure
        configure(app, self.s)
        want = {f"{role}@{self.s.host_name}" for role in gpu_roles(self.s) + ["cpu"]}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_dead()
            replies = app.control.ping(timeout=1.0) or []
            if want <= {name for r in replies for name in r}:
                return
        raise FarmUnavailable("the workers did not answer within "
                              f"{timeout:g} s", hint=f"see the logs in {self.logs}")

    def raise_if_dead(self) -> None:
        """While starting, a child that dies is an error (its cause will not go away)."""
        dead = self.children.dead_before_ready()
        if dead is not None:
            raise FarmUnavailable(f"{dead.name} {describe_exit(dead.popen.returncode)}",
                                  hint=f"see {self.logs / (dead.name + '.log')}:\n"
                                       f"{self.children.log_tail(dead.name)}")

    # -- run and stop -----------------------------------------------------------------
    def serve(self) -> int:
        """Supervise the children until Ctrl-C or SIGTERM; then stop everything."""
        stop = {"now": False}

        def on_signal(signum, frame):
            stop["now"] = True
        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._note("up", f"farm up (pid {os.getpid()}) supervising "
                         f"{', '.join(c.name for c in self.children.children)}")
        try:
            while not stop["now"]:
                self.children.tick()
                self._flush_events()
                time.sleep(TICK)
            return 0
        finally:
            self.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _note(self, event: str, message: str) -> None:
        self.children.events.append({"at": round(time.time(), 3), "child": "farm",
                                     "event": event, "pid": os.getpid(), "code": None,
                                     "message": message})

    def _flush_events(self) -> None:
        """Hand the supervisor's events to Redis (for the board); kept while it is away."""
        events = self.children.events
        if not events or self._store is None:
            return
        try:
            self._store.events.record(events)
            events.clear()
        except FarmError:
            del events[:-EVENTS_HELD]

    def stop(self, grace: float = 15.0) -> None:
        """Stop children in reverse order; workers cold (their darknet dies with them and
        the runs resume from their checkpoints on the next start); Redis last, saved."""
        if self.children.children:
            self._note("down", "farm stopping")
            self._flush_events()
        self.children.stop(grace)
        if self._claimed:
            self.record.unlink(missing_ok=True)
            self._claimed = False
