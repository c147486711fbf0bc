"""`farm up`: a whole farm on one machine, in the foreground, stopped cleanly by Ctrl-C.

It starts, as child processes: a `redis-server` with AOF persistence under the data dir
(unless FARM_REDIS_URL names an existing Redis), a `gpu` worker (concurrency 1, no
prefetch), a `cpu` worker (also `augment`, `eval`), beat, Flower behind a login, and the
farm board behind the same login.
Every worker also listens on `host.<name>`, so more machines can join the same Redis.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from farm.credentials import FLOWER_PASSWORD, METRICS_TOKEN, ensure_secret
from farm.errors import FarmError, FarmUnavailable, PortInUse
from farm.settings import Settings
from farm.state import Store
from workers.app import host_queue

FLOWER_USER = "farm"


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    stop_signal: int = signal.SIGTERM


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
    """Flower's password, made once and kept 0600; True when it was just made."""
    return ensure_secret(data_dir / FLOWER_PASSWORD)


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


def worker_argv(role: str, s: Settings, queues: list[str], concurrency: int) -> list[str]:
    argv = celery_argv("worker", "-n", f"{role}@{s.host_name}",
                       "-Q", ",".join(queues + [host_queue(s.host_name)]),
                       "-c", str(concurrency), "-P", "prefork", "-E", "-l", "INFO",
                       "--prefetch-multiplier=1")
    if role == "gpu":
        argv.append("--disable-prefetch")
    return argv


class EmbeddedFarm:
    def __init__(self, settings: Settings, *, flower: bool = True, beat: bool = True,
                 echo=click.echo):
        self.s = settings
        self.data_dir = Path(settings.data_dir)
        self.children: list[Child] = []
        self.flower = flower
        self.beat = beat
        self.echo = echo
        self.logs = self.data_dir / "logs"

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

    def _spawn(self, name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        env = {**os.environ, **self.s.to_env()}
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=str(Path(__file__).resolve().parents[1]),
                                 start_new_session=True)
        log.close()
        self.children.append(Child(name, popen, stop_signal))

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.check()
        if self.s.embedded:
            redis_dir = self.data_dir / "redis"
            redis_dir.mkdir(exist_ok=True)
            self._spawn("redis", ["redis-server", "--port", str(self.s.redis_port),
                                  "--bind", "127.0.0.1", "--dir", str(redis_dir),
                                  "--appendonly", "yes", "--save", "300 1",
                                  "--maxmemory-policy", "noeviction"])
        self._wait_redis()
        self._spawn("worker-gpu", worker_argv("gpu", self.s, ["gpu"], 1), signal.SIGQUIT)
        self._spawn("worker-cpu", worker_argv("cpu", self.s, ["cpu", "augment", "eval"], 2),
                    signal.SIGQUIT)
        if self.beat:
            self._spawn("beat", celery_argv("beat", "-s", str(self.data_dir / "beat-schedule"),
                                            "-l", "INFO"))
        if self.flower:
            password, fresh = flower_password(self.data_dir)
            self._spawn("flower", celery_argv(
                "flower", f"--address={self.s.flower_address}", f"--port={self.s.flower_port}",
                f"--basic_auth={FLOWER_USER}:{password}", "--persistent=True",
                f"--db={self.data_dir / 'flower.db'}", "--state_save_interval=60000",
                "--purge_offline_workers=3600"))
            token, made = ensure_secret(self.data_dir / METRICS_TOKEN, 24)
            self._spawn("board", [sys.executable, "-m", "dashboard"])
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
                return
            except FarmError:
                dead = [c for c in self.children if c.popen.poll() is not None]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    raise FarmUnavailable(
                        f"Redis did not come up at {self.s.effective_redis_url}",
                        hint=f"see {self.logs / 'redis.log'}") from None
                time.sleep(0.1)

    def wait_workers(self, timeout: float = 60) -> None:
        """Block until both workers answer a ping (a farm that accepts work)."""
        from workers.app import app, configure
        configure(app, self.s)
        want = {f"gpu@{self.s.host_name}", f"cpu@{self.s.host_name}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_dead()
            replies = app.control.ping(timeout=1.0) or []
            if want <= {name for r in replies for name in r}:
                return
        raise FarmUnavailable("the workers did not answer within "
                              f"{timeout:g} s", hint=f"see the logs in {self.logs}")

    def raise_if_dead(self) -> None:
        for c in self.children:
            if c.popen.poll() is not None:
                raise FarmUnavailable(f"{c.name} exited with {c.popen.returncode}",
                                      hint=f"see {self.logs / (c.name + '.log')}")

    # -- run and stop -----------------------------------------------------------------
    def serve(self) -> int:
        """Wait until Ctrl-C/SIGTERM (or a child dies); then stop everything."""
        stop = {"now": False}

        def on_signal(signum, frame):
            stop["now"] = True
        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop["now"]:
                dead = next((c for c in self.children if c.popen.poll() is not None), None)
                if dead:
                    self.echo(f"{dead.name} exited with {dead.popen.returncode}; stopping the "
                              f"farm (see {self.logs / (dead.name + '.log')})", err=True)
                    return 1
                time.sleep(0.5)
            return 0
        finally:
            self.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def stop(self, grace: float = 15.0) -> None:
        """Stop children in reverse order; workers cold (their darknet dies with them and
        the runs resume from their checkpoints on the next start); Redis last, saved."""
        for c in reversed(self.children):
            if c.popen.poll() is None:
                try:
                    os.killpg(c.popen.pid, c.stop_signal)
                except ProcessLookupError:
                    pass
                try:
                    c.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    os.killpg(c.popen.pid, signal.SIGKILL)
                    c.popen.wait()
        self.children.clear()


def pidfile(data_dir: Path) -> Path:
    return Path(data_dir) / "farm-up.pid"


def claim_pidfile(data_dir: Path) -> Path:
    path = pidfile(data_dir)
    if path.exists():
        try:
            pid = int(path.read_text())
            os.kill(pid, 0)
            raise FarmUnavailable(f"a farm is already up here (pid {pid}, data dir {data_dir})",
                                  hint="`farm down` stops it")
        except (ValueError, ProcessLookupError):
            pass  # stale
    path.write_text(str(os.getpid()))
    return path
