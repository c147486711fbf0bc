"""`farm up` heals itself: real processes killed with SIGKILL, as a bad night would.

Every child of `farm up` (Redis, the workers and their pool processes, beat, Flower, the
board) killed with -9 is restarted and training resumes, never with two darknet
processes for one run; a crash loop is given up with a message; `farm up` killed with -9
takes every process of its farm along, and the next `farm up` starts; no password
is visible in `ps`; a Redis URL that names another kind of server is one clear message.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from farm.settings import load
from farm.store import Store
from tests.conftest import REPO, Overlap, darknet_procs_of, embedded_env, farm_cmd, wait_for
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path) -> dict:
    return embedded_env(tmp_path, host_name="healtest", restart_backoff="0.2",
                        restart_limit="3", restart_window="600")


class Up:
    """A `farm up` subprocess, its output collected line by line."""

    def __init__(self, env: dict, *args: str):
        self.env = env
        self.data_dir = Path(env["FARM_DATA_DIR"])
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", *args],
                                     env=env, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> "Up":
        wait_for(lambda: "workers ready" in self.output or self.proc.poll() is not None,
                 120, 0.1, what="farm up to be ready")
        assert self.proc.poll() is None, self.output
        return self

    def pid(self, child: str) -> int:
        record = json.loads((self.data_dir / "farm-up.pid").read_text())
        return record["children"][child]["pid"]

    def restarted(self, child: str, old: int) -> int:
        """Wait until `child` runs again under a new pid; that pid."""
        def new_pid():
            try:
                pid = self.pid(child)
            except (KeyError, OSError, ValueError):
                return None
            return pid if pid != old and psutil.pid_exists(pid) else None
        return wait_for(new_pid, 30, 0.1, what=f"{child} to be restarted\n{self.output}")

    def store(self) -> Store:
        return Store(load(env=self.env).effective_redis_url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                for c in psutil.Process(self.proc.pid).children(recursive=True):
                    c.kill()
            except psutil.NoSuchProcess:
                pass
            self.proc.kill()
            self.proc.wait(10)


def _submit(env: dict, tmp_path: Path, max_batches: int) -> str:
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=max_batches)
    r = farm_cmd("train", str(data), str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _training_again(store: Store, run_id: str, after: float, attempts_before: int) -> int:
    """Wait for an attempt newer than `attempts_before` to record an iteration later than
    `after`; its number."""
    def trains():
        run = store.runs.load(run_id)
        if len(run.attempts) <= attempts_before:
            return None
        n = run.attempts[-1].number
        newer = [m for _, m in store.progress.metrics(run_id, start=f"{int(after * 1000)}-0")
                 if m["a"] == str(n) and float(m["t"]) > after]
        return n if newer else None
    return wait_for(trains, 90, 0.1, what=f"run {run_id} to train again")


def _get(url: str, password: str) -> int:
    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(f"farm:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _json(url: str, password: str) -> dict:
    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(f"farm:{password}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _pool_of(main_pid: int) -> psutil.Process:
    return wait_for(lambda: next(iter(psutil.Process(main_pid).children()), None), 30,
                    what="the worker's pool process")


def test_every_child_killed_with_sigkill_comes_back_and_training_resumes(env, tmp_path,
                                                                          darknet_bin):
    data_dir = Path(env["FARM_DATA_DIR"])
    (data_dir / "redis").mkdir(parents=True)
    for old in (data_dir / "redis" / "dump.rdb", data_dir / "flower.db.dat"):
        old.write_bytes(b"")  # as an older `farm up` left them: world-readable
        old.chmod(0o644)
    up = Up(env).wait_ready()
    overlap = None
    try:
        data_dir = up.data_dir
        flower_pw = (data_dir / "flower.password").read_text().strip()
        redis_pw = (data_dir / "redis.password").read_text().strip()

        # secrets: in 0600 files, never on a command line; Redis wants its password
        for secret in (data_dir / "redis.password", data_dir / "redis" / "redis.conf"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "redis-server" in ps and "flower" in ps
        assert flower_pw not in ps and redis_pw not in ps
        assert "--basic_auth" not in ps and "requirepass" not in ps
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(env["FARM_REDIS_PORT"])).ping()

        store = up.store()
        run_id = _submit(env, tmp_path, max_batches=100000)
        wait_for(lambda: store.runs.load(run_id).good_checkpoint, 90, 0.2,
                 what="a first checkpoint")
        overlap = Overlap(data_dir / "runs" / run_id)
        overlap.start()

        # a training worker's pool process, then its main process
        for victim in ("pool", "worker-gpu"):
            main = up.pid("worker-gpu")
            pid = _pool_of(main).pid if victim == "pool" else main
            before = len(store.runs.load(run_id).attempts)
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            if victim == "worker-gpu":
                up.restarted("worker-gpu", main)
            _training_again(store, run_id, killed_at, before)

        # Redis: back from its AOF, with the run and its history, and training goes on
        old = up.pid("redis")
        killed_at = time.time()
        os.kill(old, signal.SIGKILL)
        up.restarted("redis", old)
        wait_for(lambda: _iteration_after(store, run_id, killed_at), 90, 0.2,
                 what="an iteration recorded after Redis came back")
        assert store.runs.load(run_id).good_checkpoint

        # beat, Flower, the board, the cpu worker
        for child in ("beat", "flower", "board", "worker-cpu"):
            old = up.pid(child)
            os.kill(old, signal.SIGKILL)
            up.restarted(child, old)
        flower = f"http://127.0.0.1:{env['FARM_FLOWER_PORT']}"
        wait_for(lambda: _get(flower + "/api/workers", flower_pw) == 200, 60,
                 what="Flower to answer again")
        board = f"http://127.0.0.1:{env['FARM_BOARD_PORT']}"
        wait_for(lambda: _get(board + "/api/runs", flower_pw) == 200, 60,
                 what="the board to answer again")
        # the reaper runs again (beat and the cpu worker are back): a pool kill resumes
        main = up.pid("worker-gpu")
        before = len(store.runs.load(run_id).attempts)
        killed_at = time.time()
        os.kill(_pool_of(main).pid, signal.SIGKILL)
        _training_again(store, run_id, killed_at, before)

        # each death and restart is on record for the board
        events = wait_for(lambda: _events_cover(store), 30, 0.5, what="supervisor events")
        assert any(e["child"] == "farm" and e["event"] == "up" for e in events)

        # a crash loop (three deaths within the window here) is given up, and said
        for _ in range(2):
            old = up.pid("beat")
            os.kill(old, signal.SIGKILL)
            if _ == 0:
                up.restarted("beat", old)
        wait_for(lambda: "crash loop" in up.output, 30, 0.1, what="the crash-loop message")
        assert "beat (pid" in up.output and "not restarting it" in up.output
        gave_up = wait_for(lambda: [e for e in store.events.recent()
                                    if e["event"] == "gave_up"], 30, 0.5, what="gave_up event")
        assert gave_up[0]["child"] == "beat" and "beat.log" in gave_up[0]["message"]
        assert up.proc.poll() is None  # the farm itself stays up
        # ... and the board says so above the runs (and /metrics, for an alert)
        shown = wait_for(lambda: _json(board + "/api/runs", flower_pw)["farm"]["given_up"],
                         30, 0.5, what="the board to show beat given up")
        assert [e["child"] for e in shown] == ["beat"] and "crash loop" in shown[0]["message"]

        assert overlap.stop() == [], "two darknet processes trained the same run at once"
        run = store.runs.load(run_id)
        lost = [a for a in run.attempts if a.outcome is not None]
        assert len(run.attempts) >= 4 and all(a.outcome.value == "lost" for a in lost)
        assert all(b.start_iteration >= 100 for b in run.attempts[1:])

        children = psutil.Process(up.proc.pid).children(recursive=True)
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0
        assert psutil.wait_procs(children, timeout=20)[1] == []
        # the farm's data (Redis's AOF and dump) and the tasks' (Flower's db): its owner's
        private = [data_dir / "redis", *(data_dir / "redis").rglob("*"),
                   *data_dir.glob("flower.db*")]
        assert {p.name for p in private} >= {"redis", "appendonlydir", "dump.rdb",
                                             "flower.db.dat"}
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode) & 0o077) for p in private} == \
            {p.name: "0o0" for p in private}
    finally:
        if overlap is not None and overlap.is_alive():
            overlap.stop()
        up.stop()


def _iteration_after(store: Store, run_id: str, t: float) -> bool:
    try:
        return any(float(m["t"]) > t for _, m in store.progress.metrics(run_id, start=f"{int(t * 1000)}-0"))
    except Exception:  # noqa: BLE001 - Redis is coming back
        return False


def _events_cover(store: Store) -> list[dict] | None:
    events = store.events.recent()
    wanted = {"redis", "worker-gpu", "beat", "flower", "board", "worker-cpu"}
    seen = {(e["child"], e["event"]) for e in events}
    if all((c, "died") in seen and (c, "restarted") in seen for c in wanted):
        return events
    return None


def _farm_processes(data_dir: Path, ports: list[str]) -> list[str]:
    """Every process on this machine that belongs to the farm of `data_dir`."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ", "cwd"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("FARM_DATA_DIR") == str(data_dir) or str(data_dir) in cmd \
                or str(data_dir) in (p.info["cwd"] or "") or any(f":{port}" in cmd for port in ports):
            if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {cmd}")
    return found


def test_farm_up_killed_with_sigkill_leaves_nothing_and_starts_again(env, tmp_path,
                                                                     darknet_bin):
    ports = [env["FARM_REDIS_PORT"], env["FARM_FLOWER_PORT"], env["FARM_BOARD_PORT"]]
    up = Up(env).wait_ready()
    try:
        store = up.store()
        run_id = _submit(env, tmp_path, max_batches=100000)
        wait_for(lambda: darknet_procs_of(up.data_dir / "runs" / run_id), 90, 0.2, what="darknet")
        tree = psutil.Process(up.proc.pid).children(recursive=True) + darknet_procs_of(
            up.data_dir / "runs" / run_id)
        assert len(tree) >= 10  # redis, 2 workers + 3 pool processes, beat, flower, board, darknet
        before = len(store.runs.load(run_id).attempts)

        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait()
        alive = psutil.wait_procs(tree, timeout=5)[1]
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
        wait_for(lambda: _farm_processes(up.data_dir, ports) == [], 5, 0.1,
                 what=f"no process of the farm left: {_farm_processes(up.data_dir, ports)}")

        r = farm_cmd("down", env=env)  # nothing is left to stop
        assert r.returncode == 3 and "no farm is up" in r.stderr, r.stderr

        up = Up(env).wait_ready()  # starts again (ports free, no stale record in the way)
        killed_at = time.time()
        _training_again(up.store(), run_id, killed_at, before)  # the run carries on
        r = farm_cmd("down", env=env)
        assert r.returncode == 0 and "farm stopped" in r.stdout, r.stderr
        assert up.proc.wait(30) == 0
        wait_for(lambda: _farm_processes(up.data_dir, ports) == [], 20, 0.1,
                 what=f"no process of the farm left: {_farm_processes(up.data_dir, ports)}")
    finally:
        up.stop()


# -- a Redis URL that names something else -------------------------------------------------

class _Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redis_url_naming_another_kind_of_server_is_one_clear_message(env, tmp_path):
    from tests.sshd import LoopbackSSHD, need_root_sshd
    need_root_sshd()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    sshd = LoopbackSSHD(tmp_path / "sshd").start()
    try:
        for name, port in (("HTTP", web.server_address[1]), ("SSH", sshd.port)):
            url = f"redis://:hunter2pw@127.0.0.1:{port}/0"
            for args in (["runs"], ["up", "--no-flower"]):
                r = farm_cmd(*args, env={**env, "FARM_REDIS_URL": url}, timeout=60)
                what = f"{name}: farm {' '.join(args)}: {r.stderr}"
                assert r.returncode == 3, what
                assert f"redis://***@127.0.0.1:{port}/0 answered, but not as Redis does" \
                    in r.stderr, what
                assert "check the host and port in FARM_REDIS_URL" in r.stderr, what
                assert "hunter2pw" not in r.stderr and "Traceback" not in r.stderr, what
        assert not (Path(env["FARM_DATA_DIR"]) / "farm-up.pid").exists()
    finally:
        web.shutdown()
        sshd.stop()
