"""Disk: retention of darknet's files, the free-space check with `no_space`, `farm gc`.

Real parts: redis-server, Celery workers, Debian's darknet on the micro network, and a
real nearly full filesystem: a tmpfs mounted by the test (this needs root, which CI has;
without it, the filesystem of the test's tmp dir with disk_margin set to all but a few
MiB of its free space: the same check, on a disk shared with other writers).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from farm.darknet import dialect as dialects
from farm.darknet.cfg import Cfg
from farm.darknet.objdata import read_obj_data, write_obj_data
from farm.darknet.process import DarknetProcess
from farm.darknet.weights import check_weights, cut_short, expected_weights_bytes
from farm.eval.checkpoints import best_weights_location
from farm.runs import disk
from farm.runs.model import Attempt, Outcome, Run, RunState
from farm.runs.policy import Policy
from farm.runs.supervisor import Limits, Supervisor
from farm.store import Store
from tests.conftest import Farm, wait_for
from workers.cli import main as farm_main
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration

#: the tmpfs the test mounts: room for the farm's files of a micro run many times over
FS_BYTES = 24 << 20


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = farm_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_fs(tmp_path):
    """(mount point, disk_margin in MiB): a real small filesystem for the data dir."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0755",
                           "tmpfs", str(mnt)], capture_output=True)
    if done.returncode == 0:
        yield mnt, 1
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        return
    # no mount here (not root): the tmp dir's own filesystem, all but 8 MiB held back
    yield mnt, max(1, (disk.free_bytes(mnt) >> 20) - 8)


@pytest.fixture
def disk_farm(small_fs, farm_settings, tmp_path, monkeypatch):
    mnt, margin = small_fs
    settings = farm_settings.replace(data_dir=str(mnt / "farm"), disk_margin=margin,
                                     disk_check_interval=0.2, disk_retry_delay=1.0)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    f = Farm(settings, tmp_path)
    yield f
    f.stop()


def micro_need(cfg: Path, margin_mib: int) -> disk.Need:
    return disk.Need(expected_weights_bytes(Cfg.load(cfg)), margin_mib << 20)


def fill(mnt: Path, leave: int) -> Path:
    """A ballast file leaving `leave` bytes free on the filesystem of `mnt`."""
    ballast = mnt / "ballast"
    size = disk.free_bytes(mnt) - leave
    assert size > 0
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return ballast


def darknet_gone(pid: int | None) -> bool:
    try:
        return pid is None or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_full_disk_stops_the_attempt_as_no_space_and_the_run_resumes_when_freed(
        disk_farm, small_fs, tmp_path, capsys, darknet_bin):
    mnt, margin = small_fs
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=500)
    need = micro_need(cfg, margin)
    store = Store(disk_farm.settings.effective_redis_url)
    disk_farm.worker("gpu1")

    # 1. before the first attempt: room to train on, not to start: the run waits queued
    ballast = fill(mnt, need.to_start - (64 << 10))
    code, out, err = cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    run_id = out.strip()
    run = wait_for(lambda: "waiting for disk space" in (r := store.runs.load(run_id)).message
                   and r, 60, 0.1, what="the run to wait for disk space")
    assert run.state is RunState.QUEUED and run.attempts == []
    assert str(disk_farm.settings.runs_dir) in run.message and "bytes free" in run.message
    assert f"needs {need.to_start} " in run.message  # 6 micro weights files + the margin
    code, out, _ = cli(capsys, "runs")
    assert code == 0 and "queued" in out and "waiting for disk space" in out

    # 2. space back: it starts; the disk fills while it trains: stopped as no_space
    ballast.unlink()
    wait_for(lambda: int(store.progress.live(run_id).get("iteration", 0)) >= 150, 120, 0.05,
             what="training past its first checkpoint")
    ballast = fill(mnt, need.to_train - (256 << 10))
    run = wait_for(lambda: (r := store.runs.load(run_id)).attempts[-1].outcome
                   is Outcome.NO_SPACE and "waiting for disk space" in r.message and r,
                   60, 0.1, what="the attempt to stop as no_space and the run to wait")
    stopped = run.attempts[-1]
    assert run.state is RunState.QUEUED
    assert "bytes free" in stopped.message and f"needs {need.to_train} " in stopped.message
    assert str(Path(stopped.workdir) / "backup") in stopped.message
    assert stopped.last_iteration < 500 and darknet_gone(stopped.pid)
    # nothing darknet wrote was cut short: each checkpoint is complete, backup/ is empty
    good = Path(run.good_checkpoint)
    assert check_weights(good, Cfg.load(Path(stopped.workdir) / "net.cfg")) == []
    assert list((Path(stopped.workdir) / "backup").iterdir()) == []
    resume_at = next(c.iteration for c in run.checkpoints if c.path == run.good_checkpoint)
    assert resume_at >= 100
    time.sleep(4.5)  # retries while the disk is still full (more than Celery's default
    # three, which once failed the task and left the run queued with nothing to retry it)
    waiting = store.runs.load(run_id)  # no new attempt meanwhile
    assert len(waiting.attempts) == len(run.attempts) and waiting.state is RunState.QUEUED

    # 3. space back: it resumes from its newest good checkpoint and completes
    ballast.unlink()
    run = wait_for(lambda: (r := store.runs.load(run_id)).state.finished and r, 180, 0.2,
                   what="the run to complete")
    assert run.state is RunState.COMPLETED, run.message
    resumed = run.attempts[-1]
    assert resumed.number == stopped.number + 1 and resumed.start_iteration == resume_at
    assert resumed.start_weights == str(good) and "no_space" in resumed.reason
    assert resumed.outcome is Outcome.COMPLETED and resumed.last_iteration == 500
    code, out, _ = cli(capsys, "status", run_id)
    assert f"attempt {stopped.number} [no_space]" in out


def test_after_a_run_only_what_retention_keeps_is_left_and_evaluation_finds_best(
        farm, tmp_path, capsys, darknet_bin):
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=400)
    farm.worker("gpu1", env={"FARM_KEEP_CHECKPOINTS": "1"})
    farm.worker("eval1", "eval")
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--eval-every", "100", "--wait")
    assert code == 0, err
    run_id = out.splitlines()[0]
    store = Store(farm.settings.effective_redis_url)
    run = store.runs.load(run_id)
    folder = Path(farm.settings.runs_dir) / run_id
    # darknet wrote .backup and _N at 100..400 and _final; the farm keeps the newest two
    assert sorted({c.iteration for c in run.checkpoints}) == [100, 200, 300, 400]
    assert list((folder / "attempt-1" / "backup").iterdir()) == []
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == \
        ["iter-0000300.weights", "iter-0000400.weights"]
    evaluated = wait_for(lambda: len(e := store.evaluations.all(run_id)) == 4 and e, 120, 0.2,
                         what="four evaluations")
    assert all(e.error is None for e in evaluated), evaluated
    best = store.evaluations.best(run_id)
    host, path = best_weights_location(store, run, farm.settings.host_name)
    assert path == str(folder / "best.weights") and Path(path).is_file()
    wait_for(lambda: not list((folder / "eval" / "queue").glob("*.weights")), 30, 0.2,
             what="the pins to be dropped once evaluated")
    # an iteration retention removed is refused with the reason, the best one is fetched
    code, _, err = cli(capsys, "fetch", run_id, "--iteration", "100", "-o",
                       str(tmp_path / "x.weights"))
    assert code == 2 and "removed by the retention policy" in err
    code, _, err = cli(capsys, "fetch", run_id, "--best", "-o", str(tmp_path / "b.weights"))
    assert code == 0, err
    assert (tmp_path / "b.weights").read_bytes() == Path(path).read_bytes()
    assert best.iteration in (100, 200, 300, 400)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file()}


def test_gc_dry_run_lists_and_removes_nothing_then_gc_spares_a_running_run(
        farm, tmp_path, capsys, darknet_bin):
    data = micro_dataset(tmp_path / "ds", images=16)
    done_cfg = micro_cfg(tmp_path / "done.cfg", max_batches=300)
    farm.worker("gpu1", env={"FARM_RETENTION": "0"})  # a farm from before retention
    code, out, err = cli(capsys, "train", str(data), str(done_cfg), "--wait")
    assert code == 0, err
    done = out.splitlines()[0]
    runs = Path(farm.settings.runs_dir)
    backup = runs / done / "attempt-1" / "backup"
    darknet_files = sorted(p.name for p in backup.iterdir())
    assert "net_final.weights" in darknet_files and "net.backup" in darknet_files
    long_cfg = micro_cfg(tmp_path / "long.cfg", max_batches=100000)
    code, out, err = cli(capsys, "train", str(data), str(long_cfg))
    running = out.strip()
    store = Store(farm.settings.effective_redis_url)
    wait_for(lambda: int(store.progress.live(running).get("iteration", 0)) >= 250, 120, 0.1,
             what="the second run to train past two checkpoints")

    before = _files(runs / done)
    code, out, err = cli(capsys, "gc", "--dry-run")
    assert code == 0, err
    listed = [line for line in out.splitlines() if line.startswith("would remove ")]
    assert {Path(line.split()[2]).name for line in listed} == set(darknet_files)
    assert all(str(runs / running) not in line for line in out.splitlines())
    total = sum((backup / name).stat().st_size for name in darknet_files)
    assert f"({total} bytes) would be reclaimed" in out and "nothing removed" in out
    assert _files(runs / done) == before

    running_backup = runs / running / "attempt-1" / "backup"
    theirs = {p.name for p in running_backup.iterdir()}
    assert "net_100.weights" in theirs  # retention 0: its darknet files stay as well
    code, out, err = cli(capsys, "gc")
    assert code == 0, err
    assert f"({total} bytes) reclaimed" in out
    assert list(backup.iterdir()) == []
    kept = _files(runs / done)
    assert "checkpoints/iter-0000300.weights" in kept and "attempt-1/darknet.log" in kept
    # the running run: untouched, and it trains on
    assert theirs <= {p.name for p in running_backup.iterdir()}
    it = int(store.progress.live(running)["iteration"])
    wait_for(lambda: int(store.progress.live(running)["iteration"]) > it + 20, 60, 0.1,
             what="the running run to go on training")
    assert store.runs.load(running).state is RunState.RUNNING
    code, _, _ = cli(capsys, "cancel", running)
    assert code == 0


def test_gc_removes_a_recipe_dataset_nothing_uses_and_stale_leftovers_only(
        farm_settings, tmp_path, capsys, monkeypatch):
    for key, value in farm_settings.to_env().items():
        monkeypatch.setenv(key, value)
    store = Store(farm_settings.effective_redis_url)
    recipes = store.recipes
    root = Path(farm_settings.data_dir) / "datasets"
    folders = {}
    for key, ds in (("rfree", "d1"), ("rused", "d2")):
        folders[key] = root / ds
        micro_dataset(folders[key], images=4)
        store.db.r.hset(f"farm:recipe:{key}", mapping={
            "recipe": "{}", "claimed": "1", "state": "ready", "dataset_id": ds,
            "data": str(folders[key] / "obj.data")})
    queued = Run(id="r-queued", data=str(folders["rused"] / "obj.data"), cfg="x.cfg",
                 weights=None, base_dir=str(folders["rused"]), overrides={}, policy={},
                 host="testhost", created_at=time.time(), max_batches=10)
    store.runs.save(queued)
    old, fresh = root / ".fetch-old", root / ".fetch-fresh"
    for staging in (old, fresh):
        (staging / "frames").mkdir(parents=True)
        (staging / "frames" / "a.png.part").write_bytes(b"x" * 1000)
    stamp = time.time() - farm_settings.gc_stale_after - 60
    for p in (old, old / "frames", old / "frames" / "a.png.part"):
        os.utime(p, (stamp, stamp))

    code, out, err = cli(capsys, "gc", "--dry-run")
    assert code == 0, err
    assert f"would remove {folders['rfree']} " in out and f"would remove {old} " in out
    assert str(fresh) not in out and f"would remove {folders['rused']}" not in out
    assert "used by queued run r-queued" in out
    assert recipes.load("rfree")["state"] == "ready" and folders["rfree"].is_dir()

    code, out, err = cli(capsys, "gc")
    assert code == 0, err
    assert not folders["rfree"].exists() and not old.exists()
    assert folders["rused"].is_dir() and fresh.is_dir()
    # unbuilt, so that a sweep needing it later builds it again; the used one is as it was
    assert recipes.load("rfree") == {"recipe": "{}", "lease": ""}
    assert recipes.load("rused")["state"] == "ready"
    assert not [p for p in root.iterdir() if p.name.startswith(".gc-")]


def test_weights_darknet_cuts_short_on_a_full_disk_never_become_checkpoints(
        small_fs, tmp_path, farm_settings, darknet_bin):
    """The safety net behind the free-space check (here without it: `space` is left
    out): Debian's darknet writing into a full tmpfs leaves short files and trains on."""
    mnt, margin = small_fs
    if margin != 1:
        pytest.skip("needs a tmpfs of its own (root): filling a shared disk is not safe")
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=130)
    workdir = tmp_path / "attempt"
    workdir.mkdir()
    write_obj_data(workdir / "obj.data", {**read_obj_data(data), "backup": str(mnt / "backup")})
    (mnt / "backup").mkdir()
    fill(mnt, 12 << 10)  # room for less than half a micro weights file (27196 bytes)
    argv = dialects.train_argv(dialects.Dialect.PJREDDIE, darknet_bin,
                               str(workdir / "obj.data"), str(cfg))
    run = Run(id="cut", data=str(data), cfg=str(cfg), weights=None, base_dir="",
              overrides={}, policy={}, host="h", created_at=time.time(), max_batches=130)
    attempt = Attempt(number=1, command=argv, hyper={}, start_weights=None,
                      start_iteration=0, host="h", workdir=str(workdir),
                      log_path=str(workdir / "darknet.log"), started_at=time.time())
    run.attempts.append(attempt)
    store = Store(farm_settings.effective_redis_url)
    net = Cfg.load(cfg)
    sup = Supervisor(progress=store.progress, run=run, attempt=attempt,
                     process=DarknetProcess(argv, workdir),
                     limits=Limits(max_batches=130, burn_in=0, policy=Policy()),
                     checkpoints_dir=mnt / "checkpoints",
                     weights_problem=lambda path: cut_short(path, net, "pjreddie"))
    a = sup.supervise()
    written = {p.name: p.stat().st_size for p in (mnt / "backup").iterdir()}
    assert written and all(size < 27196 for size in written.values())  # darknet's own
    assert a.last_iteration == 130 and run.checkpoints == [] and run.good_checkpoint is None
    assert a.outcome is Outcome.CRASHED and "final weights at iteration 130 are not " \
        "complete" in a.message
    log, _ = store.progress.log_since("cut")
    assert sum("is not complete" in line and "not taken as a checkpoint" in line
               for line in log) == len(written)
