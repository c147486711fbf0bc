"""Real parts for the tests: a redis-server, Celery worker and beat processes, darknet.

Nothing here is a stand-in: workers are `celery worker` processes with the farm's real
app and routes, talking to a real redis-server on a free loopback port; training runs
the Debian `darknet` on the micro network (workers.micro). The only stand-in anywhere is the
GPU: the `gpu` queue's worker trains on the CPU, as this machine has no GPU.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from farm.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A file from ../shared, or a skip saying why it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared (beside the checkout) holds the real "
                    f"darknet logs and cfgs these tests read")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def darknet_procs_of(run_dir: Path) -> list:
    """darknet processes working in this run's folder (each attempt has its own cwd)."""
    import psutil
    found = []
    for p in psutil.process_iter(["name", "cwd"]):
        try:
            if p.info["name"] == "darknet" and str(run_dir) in (p.info["cwd"] or ""):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


class Overlap(threading.Thread):
    """Counts, every 20 ms, the darknet processes training one run: never more than one."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.run_dir, self.seen = run_dir, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            n = len(darknet_procs_of(self.run_dir))
            if n > 1:
                self.seen.append(n)
            time.sleep(0.02)

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        return self.seen


def embedded_env(tmp_path: Path, **farm: str) -> dict[str, str]:
    """The environment of a `farm` command with an embedded farm of its own: a data dir
    under `tmp_path`, free ports, no FARM_* of the caller; `farm` adds FARM_<KEY>s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(FARM_DATA_DIR=str(tmp_path / "farm"), FARM_REDIS_PORT=str(free_port()),
               FARM_FLOWER_PORT=str(free_port()), FARM_BOARD_PORT=str(free_port()),
               PYTHONPATH=str(REPO), **{f"FARM_{k.upper()}": v for k, v in farm.items()})
    return env


def farm_cmd(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """`farm ARGS` as a person runs it: a subprocess, its exit code and output."""
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def blank_line_in_train_list(data: Path) -> Path:
    """The seed's broken list, made after a run was submitted (its checks passed then):
    only the worker, which checks again, can refuse it. Returns the list's path."""
    train = Path(data).parent / "train.txt"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    return train


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server); "
                    ".ci/run installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), 10, what="redis-server to start")
    yield url
    proc.terminate()
    proc.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture
def farm_settings(redis_server, tmp_path) -> Settings:
    """Settings for one test: its own data dir and a flushed Redis database.

    Always database 1: the test process's Celery app keeps its first broker connection,
    so every in-process test must talk to the same database (subprocess tests use others).
    """
    url = f"{redis_server}/1"
    redis.Redis.from_url(url).flushdb()
    return Settings(data_dir=str(tmp_path / "farm"), redis_url=url, host_name="testhost",
                    lease_ttl=4.0, reaper_interval=1.0, stall_timeout=60.0).validate()


class Farm:
    """Real Celery processes (workers, beat) for one test; all stopped at the end."""

    def __init__(self, settings: Settings, tmp: Path):
        self.settings = settings
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env(),
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None
               ) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env={**self.env, **(env or {})}, cwd=str(REPO),
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def worker(self, name: str, queues: str = "gpu", concurrency: int = 1, *,
               host: str = "testhost", env: dict[str, str] | None = None) -> subprocess.Popen:
        """A worker `name@host`; `env` adds FARM_* settings of its own (another host's)."""
        proc = self._spawn(name, [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                                  "-n", f"{name}@{host}", "-Q", queues, "-c", str(concurrency),
                                  "-P", "prefork", "--disable-prefetch",
                                  "--prefetch-multiplier=1", "-E", "-l", "INFO"], env)
        self.wait_ping(f"{name}@{host}")
        return proc

    def beat(self) -> subprocess.Popen:
        return self._spawn("beat", [sys.executable, "-m", "celery", "-A", "workers.app", "beat",
                                    "-s", str(self.tmp / "beat-schedule"), "-l", "INFO"])

    def flower(self, port: int, password: str) -> subprocess.Popen:
        """Flower with a login, given through its environment (never on argv, like `farm up`)."""
        return self._spawn("flower", [sys.executable, "-m", "celery", "-A", "workers.app",
                                      "flower", "--address=127.0.0.1", f"--port={port}"],
                           env={"FLOWER_BASIC_AUTH": f"farm:{password}"})

    def wait_ping(self, node: str, timeout: float = 60) -> None:
        from workers.app import app, configure
        configure(app, self.settings)

        def answered():
            replies = app.control.ping(destination=[node], timeout=0.5) or []
            return any(node in r for r in replies)
        wait_for(answered, timeout, 0.2, what=f"worker {node} to answer ping "
                                              f"(log: {self.tmp / node.split('@')[0]}.log)")

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


@pytest.fixture
def farm(farm_settings, tmp_path, monkeypatch):
    """The test's farm: start workers/beat with `farm.worker(...)`, `farm.beat()`.

    The CLI run in-process sees the same settings through FARM_* variables.
    """
    for key, value in farm_settings.to_env().items():
        monkeypatch.setenv(key, value)
    f = Farm(farm_settings, tmp_path)
    yield f
    f.stop()


@pytest.fixture(scope="session")
def darknet_bin() -> str:
    path = shutil.which("darknet")
    if path is None:
        pytest.fail("darknet is not installed (apt-get install darknet); .ci/run installs it")
    return path
