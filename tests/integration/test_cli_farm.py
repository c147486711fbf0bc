"""`farm` as a person runs it: real subprocesses, real exit codes and messages.

`farm up` starts a real redis-server, two Celery workers, beat and Flower; bad input of
every kind gets one clear message, a non-zero exit code, and leaves nothing behind.
"""
from __future__ import annotations

import base64
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from tests.conftest import REPO, embedded_env, farm_cmd, free_port, wait_for
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path) -> dict:
    return embedded_env(tmp_path, host_name="clitest")


def test_no_darknet_binary_is_one_clear_message_and_exit_3(env):
    env["FARM_DARKNET"] = "/nonexistent/darknet"
    r = farm_cmd("up", env=env)
    assert r.returncode == 3
    assert "darknet binary '/nonexistent/darknet' not found" in r.stderr
    assert "apt-get install darknet" in r.stderr and "Traceback" not in r.stderr


def test_redis_unreachable_is_exit_3_with_what_to_do(env):
    env["FARM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    r = farm_cmd("runs", env=env)
    assert r.returncode == 3
    assert "cannot reach Redis" in r.stderr and "farm up" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_port_in_use_is_named(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["FARM_REDIS_PORT"])))
        s.listen()
        r = farm_cmd("up", env=env)
    assert r.returncode == 3
    assert f"port {env['FARM_REDIS_PORT']} on 127.0.0.1 is in use" in r.stderr
    assert "FARM_REDIS_PORT" in r.stderr


def test_missing_file_and_unknown_set_key_write_nothing(env, redis_server, tmp_path):
    env["FARM_REDIS_URL"] = f"{redis_server}/14"
    client = redis.Redis.from_url(env["FARM_REDIS_URL"])
    client.flushdb()
    data = micro_dataset(tmp_path / "ds", images=4)
    cfg = micro_cfg(tmp_path / "micro.cfg")
    r = farm_cmd("train", str(tmp_path / "nope.data"), str(cfg), env=env)
    assert r.returncode == 2 and "obj.data" in r.stderr and "nope.data does not exist" in r.stderr
    r = farm_cmd("train", str(data), str(cfg), "--set", "learnig_rate=0.1", env=env)
    assert r.returncode == 2 and "learnig_rate" in r.stderr and "learning_rate" in r.stderr
    r = farm_cmd("train", str(data), str(cfg), "--set", "learning_rate", env=env)
    assert r.returncode == 2 and "is not key=value" in r.stderr
    assert client.keys("farm:*") == []  # no run half-recorded
    assert not (tmp_path / "farm" / "runs").exists()


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_farm_up_runs_everything_behind_a_login_and_ctrl_c_stops_it_all(env, tmp_path,
                                                                          darknet_bin):
    data_dir = Path(env["FARM_DATA_DIR"])
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        wait_for(lambda: (lines.append(proc.stdout.readline()) or "workers ready" in lines[-1]
                          or proc.poll() is not None), 90, 0, what="farm up to be ready")
        assert proc.poll() is None, "".join(lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "flower" in names and " beat " in names
        assert "-m dashboard" in names
        assert "gpu@clitest" in names and "cpu@clitest" in names
        assert "gpu,host.clitest" in names and "-c 1" in names

        # Flower: a login, shown once, kept 0600
        password_file = data_dir / "flower.password"
        password = password_file.read_text().strip()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert any(password in line for line in lines)
        flower = f"http://127.0.0.1:{env['FARM_FLOWER_PORT']}"
        wait_for(lambda: _get(flower + "/api/workers", ("farm", password)) == 200, 30,
                 what="Flower to answer")
        assert _get(flower + "/api/workers") == 401
        assert _get(flower + "/", ("farm", "wrong")) == 401
        board = f"http://127.0.0.1:{env['FARM_BOARD_PORT']}"
        wait_for(lambda: _get(board + "/api/runs", ("farm", password)) == 200, 30,
                 what="the board to answer")
        assert _get(board + "/api/runs") == 401
        # Redis persists under the data dir
        assert (data_dir / "redis" / "appendonlydir").exists()
        # a second farm on the same data dir is refused
        r = farm_cmd("up", env=env)
        assert r.returncode == 3 and "already up" in r.stderr

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        gone = psutil.wait_procs(children, timeout=20)[1]
        assert gone == [], f"left running after Ctrl-C: {[p.cmdline() for p in gone]}"
        assert not (data_dir / "farm-up.pid").exists()
    finally:
        if proc.poll() is None:
            for c in psutil.Process(proc.pid).children(recursive=True):
                c.kill()
            proc.kill()


def test_farm_down_stops_a_running_farm(env, darknet_bin):
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--no-flower"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "workers ready" in proc.stdout.readline() or proc.poll() is not None,
                 90, 0, what="farm up")
        r = farm_cmd("down", env=env)
        assert r.returncode == 0 and "farm stopped" in r.stdout
        assert proc.wait(10) == 0
        r = farm_cmd("down", env=env)
        assert r.returncode == 3 and "no farm is up" in r.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
