"""Training runs end to end: real redis-server, real Celery workers, Debian's darknet.

The micro network (workers.micro) trains at tens of iterations per second on the CPU; the
`gpu` queue worker here is a CPU stand-in for a GPU worker (this machine has no GPU).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from farm.runs.model import Outcome, RunState
from farm.store import Store
from tests.conftest import Overlap, darknet_procs_of, wait_for
from workers.cli import main as farm_main
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = farm_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def store_of(farm) -> Store:
    return Store(farm.settings.effective_redis_url)


def wait_run(store: Store, run_id: str, timeout: float = 120):
    return wait_for(lambda: (r := store.runs.load(run_id)).state.finished and r,
                    timeout, 0.2, what=f"run {run_id} to finish")


@pytest.fixture
def micro(tmp_path):
    data = micro_dataset(tmp_path / "ds", images=16)
    return data, tmp_path


def test_a_run_completes_with_iterations_and_checkpoints(farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=150)
    farm.worker("gpu1")
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--wait")
    assert code == 0, err
    run_id = out.splitlines()[0]
    assert f"{run_id}: completed" in out

    store = store_of(farm)
    run = store.runs.load(run_id)
    assert run.state is RunState.COMPLETED
    [attempt] = run.attempts
    assert attempt.outcome is Outcome.COMPLETED and attempt.last_iteration == 150
    assert attempt.exit_code == 0
    # every iteration is in the time series, in order, finite
    metrics = store.progress.metrics(run_id)
    assert [int(m["i"]) for _, m in metrics] == list(range(1, 151))
    assert all(math.isfinite(float(m["avg"])) for _, m in metrics)
    # checkpoints: 100 (pjreddie writes .backup and _100 there) and the final one at 150
    its = sorted({c.iteration for c in run.checkpoints})
    assert its == [100, 150] and all(c.finite for c in run.checkpoints)
    assert run.good_checkpoint and Path(run.good_checkpoint).exists()
    assert Path(run.good_checkpoint).name == "iter-0000150.weights"
    # the attempt ran in its own directory; retention moved what the farm keeps out of
    # darknet's backup/ and removed the rest (.backup, _100: the same weights)
    workdir = Path(attempt.workdir)
    assert (workdir / "darknet.log").exists() and list((workdir / "backup").iterdir()) == []
    assert sorted(p.name for p in Path(run.good_checkpoint).parent.iterdir()) == \
        ["iter-0000150.weights"]
    assert "detector" in attempt.command and "-dont_show" not in attempt.command  # pjreddie

    code, out, _ = cli(capsys, "status", run_id)
    assert code == 0 and "attempt 1 [completed] iterations 0->150" in out
    assert "2 finite, 0 poisoned" in out
    code, out, _ = cli(capsys, "status", run_id, "--json")
    doc = json.loads(out)
    assert doc["attempts"][0]["outcome"] == "completed" and doc["live"]["iteration"] == "150"
    code, out, _ = cli(capsys, "runs")
    assert run_id in out and "completed" in out and "150/150" in out
    code, out, _ = cli(capsys, "logs", run_id, "-n", "3")
    assert "net_final.weights" in out


def test_a_divergent_run_is_restarted_with_a_lower_rate_until_finite(farm, micro, capsys,
                                                                      darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=60)
    farm.worker("gpu1")
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--set", "learning_rate=0.05",
                         "--set", "burn_in=0", "--policy", "burn_in_min=0",
                         # darknet seeds from the clock: now and then 0.00625 spikes too
                         "--policy", "max_divergence_restarts=6", "--wait")
    run = store_of(farm).runs.load(out.splitlines()[0])
    assert code == 0, (out, err, [(a.outcome, a.message) for a in run.attempts])
    diverged = [a for a in run.attempts if a.outcome is Outcome.DIVERGED]
    assert diverged, "lr 0.05 with burn_in 0 must diverge on the micro net"
    first = run.attempts[0]
    assert first.outcome is Outcome.DIVERGED and first.first_bad_iteration <= 12
    # darknet was stopped at the first non-finite line, not left to run to max_batches
    assert first.last_iteration == first.first_bad_iteration
    rates = [float(a.hyper["learning_rate"]) for a in run.attempts]
    assert rates[0] == 0.05 and all(b == a / 2 for a, b in zip(rates, rates[1:]))
    assert run.attempts[1].changes["learning_rate"] == ["0.05", "0.025"]
    assert "diverged at iteration" in run.attempts[1].reason
    assert run.attempts[-1].outcome is Outcome.COMPLETED
    assert run.state is RunState.COMPLETED
    code, out, _ = cli(capsys, "status", run.id)
    assert "changed: learning_rate 0.05 -> 0.025" in out


def test_cancel_kills_darknet_and_leaves_no_process(farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=100000)
    farm.worker("gpu1")
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()
    store = store_of(farm)
    wait_for(lambda: int(store.progress.live(run_id).get("iteration", 0)) > 5, 60, what="training")
    run_dir = Path(farm.settings.runs_dir) / run_id
    assert len(darknet_procs_of(run_dir)) == 1
    code, out, err = cli(capsys, "cancel", run_id)
    assert code == 0 and "cancelled" in out, err
    assert darknet_procs_of(run_dir) == []
    run = wait_run(store, run_id, 20)
    assert run.state is RunState.CANCELLED and run.attempts[-1].outcome is Outcome.CANCELLED


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGQUIT], ids=["kill-9", "cold-stop"])
def test_a_lost_worker_run_resumes_elsewhere_from_its_checkpoint(farm, micro, capsys,
                                                                 darknet_bin, how):
    """kill -9, or a cold shutdown (what `farm up`'s Ctrl-C does): never a cancellation."""
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=400)
    first = farm.worker("gpu1")
    farm.worker("cpu1", "cpu")  # runs beat's reaper, as in `farm up`
    farm.beat()
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()
    store = store_of(farm)
    run_dir = Path(farm.settings.runs_dir) / run_id
    wait_for(lambda: store.runs.load(run_id).good_checkpoint, 60, what="a first checkpoint")

    overlap = Overlap(run_dir)
    overlap.start()
    try:
        if how == signal.SIGKILL:
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no goodbye
        else:
            os.kill(first.pid, signal.SIGQUIT)
        first.wait(10)
        wait_for(lambda: darknet_procs_of(run_dir) == [], 10,
                 what="darknet to die with its worker")
        farm.worker("gpu2")
        again = wait_for(lambda: len((r := store.runs.load(run_id)).attempts) > 1 and r,
                         60, 0.02, what="the run to be taken again")
        if again.state is RunState.RUNNING:  # "resubmitted" was true while it was queued
            assert again.message == "", again.message
        run = wait_run(store, run_id, 120)
    finally:
        seen = overlap.stop()
    assert seen == [], "two darknet processes trained the same run at once"
    assert run.state is RunState.COMPLETED, run.message
    lost, resumed = run.attempts[0], run.attempts[-1]
    assert lost.outcome is Outcome.LOST and "worker gpu1@testhost" in lost.message
    if how == signal.SIGKILL:  # the reaper saw the process gone, no lease had to expire
        assert lost.message.startswith("the process of worker gpu1@testhost"), lost.message
    assert resumed.start_iteration >= 100 and resumed.start_weights.endswith(".weights")
    assert resumed.last_iteration == 400 and "gpu2@testhost" in run.worker
    # the resumed attempt continued the iteration count instead of starting over
    its = [int(m["i"]) for _, m in store.progress.metrics(run_id) if m["a"] == str(resumed.number)]
    assert its[0] == resumed.start_iteration + 1


def test_without_beat_the_workers_of_a_host_resume_what_died_on_it(farm, micro, capsys,
                                                                 darknet_bin):
    """The user's trainer is another machine than beat's: there, its own workers are the
    reapers (workers/reaping.py). No beat here, no cpu worker: a killed pool process is
    queued again by its own worker, a killed worker by the other one of the host."""
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=1500)
    first = farm.worker("gpu1")
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()
    store = store_of(farm)

    def training_again(after: int, timeout: float = 30):
        return wait_for(lambda: len((r := store.runs.load(run_id)).attempts) > after
                        and r.current.last_iteration and r, timeout, 0.1,
                        what=f"attempt {after + 1} training")
    wait_for(lambda: store.runs.load(run_id).good_checkpoint, 60, what="a first checkpoint")
    [pool] = psutil.Process(first.pid).children()
    pool.kill()
    again = training_again(1)
    assert "the process of worker gpu1@testhost" in again.attempts[0].message
    assert "gpu1@testhost" in again.worker
    farm.worker("gpu2")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child
    first.wait(10)
    again = training_again(2)
    assert "gpu2@testhost" in again.worker
    assert wait_run(store, run_id, 120).state is RunState.COMPLETED
    assert "beat" not in farm.procs and "cpu1" not in farm.procs


def test_a_holder_frozen_past_its_lease_stops_when_it_wakes_and_never_trains_again(
        farm, micro, capsys, darknet_bin):
    """A worker frozen (SIGSTOP: a swap storm, a VM paused) longer than its lease: the run
    is taken over, its darknet killed by the new holder. On waking, the old holder finds
    its darknet gone, and must neither restart it (two darknets for one run) nor write
    its stale view of the run over the new holder's."""
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=1500)
    short = {"FARM_LEASE_TTL": "3"}
    first = farm.worker("gpu1", env=short)
    farm.worker("cpu1", "cpu")  # beat's reaper
    farm.beat()
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()
    store = store_of(farm)
    old_task = store.runs.load(run_id).task_id
    run_dir = Path(farm.settings.runs_dir) / run_id
    wait_for(lambda: store.runs.load(run_id).good_checkpoint, 60, what="a first checkpoint")
    [holder] = psutil.Process(first.pid).children()  # the pool process that runs the task
    holder.suspend()
    overlap = Overlap(run_dir)
    overlap.start()
    try:
        farm.worker("gpu2", env=short)
        taken = wait_for(lambda: len((r := store.runs.load(run_id)).attempts) > 1
                         and r.current.pid and r.current.last_iteration and r, 60, 0.1,
                         what="gpu2 to take the run over")
        assert "gpu2@" in taken.worker and taken.attempts[0].outcome is Outcome.LOST
        holder.resume()  # it finds its darknet killed, and its lease gone
        from workers.app import app
        # the reaper ended the old task (WorkerLostError: the lease expired); the old
        # holder, awake, ends it in its own words
        failed = wait_for(lambda: "LeaseLost" in repr((r := app.AsyncResult(old_task)).result)
                          and r, 30, 0.2, what="the old holder's end")
        assert failed.state == "FAILURE"
        assert str(failed.result) == (f"{run_id}: the lease went to another worker while "
                                      f"this one trained; the run goes on as task "
                                      f"{store.runs.load(run_id).task_id}")
        mid = store.runs.load(run_id)  # not the old holder's stale view written back
        assert len(mid.attempts) == 2 and "gpu2@" in mid.worker, mid.attempts
        time.sleep(3)  # what the old holder would have started by now
        run = wait_run(store, run_id, 180)
    finally:
        seen = overlap.stop()
        if holder.is_running() and holder.status() == psutil.STATUS_STOPPED:
            holder.resume()  # a failed step above: never leave a stopped process behind
    assert seen == [], "two darknet processes trained the same run at once"
    assert run.state is RunState.COMPLETED, run.message
    assert [a.outcome for a in run.attempts] == [Outcome.LOST, Outcome.COMPLETED]


def test_crash_by_signal_restarts_once_from_the_newest_good_checkpoint(farm, micro, capsys,
                                                                       darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=300)
    farm.worker("gpu1")
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()
    store = store_of(farm)
    wait_for(lambda: store.runs.load(run_id).good_checkpoint, 60, what="a checkpoint")
    [proc] = darknet_procs_of(Path(farm.settings.runs_dir) / run_id)
    proc.send_signal(signal.SIGSEGV)
    run = wait_run(store, run_id)
    assert [a.outcome for a in run.attempts] == [Outcome.CRASHED, Outcome.COMPLETED]
    assert "SIGSEGV" in run.attempts[0].message
    assert run.attempts[1].start_iteration >= 100 and run.attempts[1].changes == {}


def test_a_valid_list_given_a_blank_line_after_submit_is_bad_input_naming_the_line(
        farm, micro, capsys, darknet_bin):
    """Checked at submit (tests/integration/test_submit_checks.py), and again by the
    worker: the list changed while the run waited in the queue."""
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=20)
    code, out, err = cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    valid = tmp / "ds" / "valid.txt"
    lines = valid.read_text().splitlines()
    valid.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    farm.worker("gpu1")
    run = wait_run(store_of(farm), out.strip())
    [attempt] = run.attempts
    assert attempt.outcome is Outcome.BAD_INPUT and run.state is RunState.FAILED
    assert f"{valid}:2" in attempt.message and "blank" in attempt.message.lower()
    assert "not retried" in run.message


def test_flower_shows_the_run_id_and_training_progress(farm, micro, capsys, darknet_bin):
    import base64
    import urllib.request

    from tests.conftest import free_port
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=400)
    port = free_port()
    farm.flower(port, "s3cret")
    farm.worker("gpu1")
    auth = "Basic " + base64.b64encode(b"farm:s3cret").decode()

    def api(path: str):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None
    wait_for(lambda: api("/api/workers?refresh=1"), 30, 0.5, what="Flower")
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()

    def progress_seen():
        tasks = api("/api/tasks") or {}
        return next((t for t in tasks.values() if run_id in (t.get("name") or "")
                     and "iteration" in str(t.get("result"))), None)
    task = wait_for(progress_seen, 60, 0.3, what="a progress event in Flower")
    assert task["name"] == f"farm.train {run_id}"
    assert task["state"] == "PROGRESS" and "avg loss" in task["result"]
    assert run_id in task["args"]
    wait_run(store_of(farm), run_id)


def test_a_stalled_attempt_is_killed_and_restarted_once(farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=250)
    farm.worker("gpu1")
    # 5 s: a loaded machine's next attempt may take 2 s to print its first iteration
    code, out, _ = cli(capsys, "train", str(data), str(cfg), "--policy", "stall_timeout=5")
    run_id = out.strip()
    store = store_of(farm)
    wait_for(lambda: store.runs.load(run_id).good_checkpoint, 60, what="a checkpoint")
    [proc] = darknet_procs_of(Path(farm.settings.runs_dir) / run_id)
    proc.suspend()  # alive but silent: what a hung GPU driver or NFS read looks like
    run = wait_run(store, run_id)
    assert [a.outcome for a in run.attempts] == [Outcome.STALLED, Outcome.COMPLETED]
    assert "no iteration for 5 s" in run.attempts[0].message
    assert not psutil.pid_exists(proc.pid) or proc.status() == psutil.STATUS_ZOMBIE
    assert run.attempts[1].start_iteration >= 100
