"""Sweeps end to end: real redis-server, real Celery workers, Debian's darknet.

Two `gpu` queue workers are CPU stand-ins for two GPU workers (this machine has no GPU);
the `cpu` worker runs the controller's ticks. Until `farm.sweep.tick_all` is on beat's
schedule (workers/app.py), a thread of the test plays beat: it sends that task to the cpu
worker every second, through the broker, exactly as beat would; "killing beat" then means
stopping that thread. Trials are micro runs of 100-160 iterations (a few seconds each).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from farm.runs.model import Outcome, RunState
from farm.store import Store
from farm.sweeps.model import SweepState
from farm.sweeps.service import advance
from farm.store.sweeps import SweepStore
from tests.conftest import wait_for
from workers.cli import cli as farm_cli
from workers.cli import main as farm_main
from workers.cli.sweep import sweep as sweep_group
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


def cli(capsys, *args: str) -> tuple[int, str, str]:
    if "sweep" not in farm_cli.commands:  # until the lead registers the group
        farm_cli.add_command(sweep_group)
    code = farm_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


class Controller:
    """The cpu worker that runs ticks, and beat (or the test's stand-in for it)."""

    def __init__(self, f):
        from workers.app import app
        self.farm, self.app = f, app
        self.real_beat = any(e["task"] == "farm.sweep.tick_all"
                             for e in app.conf.beat_schedule.values())
        self.generation = 0
        self.worker = self.beat = None
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        self.generation += 1
        name = f"cpu{self.generation}"
        # -I: the sweep tasks, until workers/app.py lists them in TASK_MODULES
        self.worker = self.farm._spawn(name, [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n",
            f"{name}@testhost", "-Q", "cpu", "-c", "1", "-I", "workers.tasks.sweep",
            "--disable-prefetch", "--prefetch-multiplier=1", "-l", "INFO"])
        self.farm.wait_ping(f"{name}@testhost")
        if self.real_beat:
            self.beat = self.farm.beat()
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick_every_second, daemon=True)
        self._thread.start()

    def _tick_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.app.send_task("farm.sweep.tick_all", queue="cpu", expires=2)

    def kill(self) -> None:
        """SIGKILL: no goodbye, whatever the worker was in the middle of."""
        for proc in (self.worker, self.beat):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self._stop.set()
        if self._thread:
            self._thread.join()

    def stop(self) -> None:
        self.kill()


@pytest.fixture
def controller(farm):
    c = Controller(farm)
    yield c
    c.stop()


@pytest.fixture
def micro(tmp_path):
    micro_dataset(tmp_path / "ds", images=16)
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    return tmp_path


def spec(folder: Path, body: str) -> Path:
    path = folder / "sweep.yaml"
    path.write_text("base: {data: ds/obj.data, cfg: micro.cfg}\n" + textwrap.dedent(body))
    return path


def wait_sweep(store: Store, sweep_id: str, timeout: float = 90):
    sweeps = store.sweeps
    return wait_for(lambda: (s := sweeps.load(sweep_id)).state is not SweepState.RUNNING
                    and s, timeout, 0.2, what=f"sweep {sweep_id} to end")


def min_avg_loss(store: Store, run_id: str) -> float:
    values = [float(m["avg"]) for _, m in store.progress.metrics(run_id)]
    return min(x for x in values if x == x and abs(x) != float("inf"))


FOUR_TRIALS = """
parameters:                 # 0.0001 barely learns: its avg loss stays about twice the
  learning_rate: [0.004, 0.002, 0.05, 0.0001]   # others' (0.001 overlaps 0.002-0.004)
concurrency: 2
budget: {iterations: 160}
objective: min_avg_loss
early_stopping: {median: {grace: 40, min_trials: 2}}   # beat ticks every 2 s: a wide window
policy: {burn_in_min: 0}
"""


def test_four_trials_on_two_gpu_workers_end_with_a_correct_leaderboard(
        farm, controller, micro, capsys, darknet_bin, tmp_path):
    farm.worker("gpu1", "gpu")
    farm.worker("gpu2", "gpu")
    controller.start()
    code, out, err = cli(capsys, "sweep", "submit", str(spec(micro, FOUR_TRIALS)))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    sw = wait_sweep(store, sweep_id)
    assert sw.state is SweepState.DONE, sw.message

    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--json")
    board = json.loads(out)["leaderboard"]
    by_trial = {r["trial"]: r for r in board}
    assert sorted(by_trial) == [0, 1, 2, 3]
    assert len({r["run_id"] for r in board}) == 4
    runs = {t: store.runs.load(r["run_id"]) for t, r in by_trial.items()}
    for t, run in runs.items():  # each trial is the run the spec asked for
        assert run.sweep == sweep_id and run.overrides["max_batches"] == "160"
        assert run.attempts[0].hyper["learning_rate"] == ["0.004", "0.002", "0.05", "0.0001"][t]
        assert by_trial[t]["restarts"] == len(run.attempts) - 1
    # ranked by the lowest finite avg loss each run printed, lowest first
    ranked = [r for r in board if r["best"] is not None]
    assert [r["best"] for r in ranked] == sorted(r["best"] for r in ranked)
    for r in ranked:
        assert r["best"] == pytest.approx(min_avg_loss(store, r["run_id"]))
    # the trials that trained together completed: neither had two others to compare with
    assert by_trial[0]["state"] == by_trial[1]["state"] == "completed"
    assert runs[0].last_iteration == runs[1].last_iteration == 160
    # lr 0.05 diverged and was restarted by the run policy; the lineage is counted
    lineage = runs[2].attempts
    assert lineage[0].outcome is Outcome.DIVERGED and by_trial[2]["divergences"] >= 1
    assert by_trial[2]["restarts"] >= 1 and lineage[1].changes["learning_rate"][0] == "0.05"
    # lr 0.0001 is the slowest learner: stopped early, and the board says why
    slow = by_trial[3]
    assert slow["state"] == "stopped" and runs[3].state is RunState.CANCELLED, \
        [(r["trial"], r["state"], r["best"], r["best_iteration"], r["iterations"], r["note"])
         for r in board]
    assert "worse than the median" in slow["note"] and "median rule" in slow["note"]
    assert slow["iterations"] < 160
    code, out, _ = cli(capsys, "sweep", "show", sweep_id)
    assert "why: avg loss" in out and "nan)" in out

    # the best trial as a bundle darknet runs as it is
    bundle = tmp_path / "best"
    code, out, err = cli(capsys, "sweep", "export", sweep_id, "-o", str(bundle))
    assert code == 0, err
    result = json.loads((bundle / "result.json").read_text())
    assert result["run_id"] == board[0]["run_id"]
    assert result["objective"] == {"name": "min_avg_loss", "value": board[0]["best"],
                                   "iteration": board[0]["best_iteration"]}
    assert result["chart"] == "chart.png" and (bundle / "chart.png").stat().st_size > 1000
    data = (bundle / "obj.data").read_text()
    assert "names = obj.names" in data and "valid = valid.txt" in data and str(micro) not in data
    assert f"learning_rate={runs[result['trial']].attempts[-1].hyper['learning_rate']}" in \
        (bundle / "best.cfg").read_text()
    image = (micro / "ds" / "valid.txt").read_text().split()[0]
    proc = subprocess.run([darknet_bin, "detector", "test", "obj.data", "best.cfg",
                           "best.weights", image, "-out", "predictions"], cwd=bundle,
                          capture_output=True, text=True, timeout=60)  # -out: no window
    assert "Predicted in" in proc.stdout + proc.stderr, proc.stderr[-500:]
    assert (bundle / "predictions.jpg").exists()


def test_killing_the_controller_mid_sweep_resumes_with_no_trial_run_twice(
        farm, controller, micro, capsys, darknet_bin):
    farm.worker("gpu1", "gpu")
    farm.worker("gpu2", "gpu")
    controller.start()
    code, out, err = cli(capsys, "sweep", "submit", str(spec(micro, """
    parameters:
      learning_rate: [0.004, 0.003, 0.002, 0.001, 0.005]
    concurrency: 2
    budget: {iterations: 100}
    objective: min_avg_loss
    """)))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    sweeps = store.sweeps

    def running() -> int:
        trials = sweeps.trials(sweep_id)
        return sum(1 for t in trials if t.run_id
                   and store.runs.load(t.run_id).state is RunState.RUNNING)
    wait_for(lambda: running() == 2, 30, 0.1, what="two trials training")
    controller.kill()
    wait_for(lambda: sum(1 for t in sweeps.trials(sweep_id) if t.run_id) >= 3
             or all(store.runs.load(t.run_id).state.finished
                    for t in sweeps.trials(sweep_id) if t.run_id), 30, 0.2,
             what="the first trials to end with no controller")
    controller.start()
    sw = wait_sweep(store, sweep_id)
    assert sw.state is SweepState.DONE, sw.message

    trials = sweeps.trials(sweep_id)
    assert [t.index for t in trials] == [0, 1, 2, 3, 4]
    assert len({t.run_id for t in trials}) == 5, "each trial has exactly one run"
    trained = [r for r in store.runs.recent(limit=100) if r.sweep == sweep_id and r.attempts]
    assert sorted(r.id for r in trained) == sorted(t.run_id for t in trials)
    for t in trials:
        run = store.runs.load(t.run_id)
        assert run.state is RunState.COMPLETED, run.message
        assert [a.outcome for a in run.attempts] == [Outcome.COMPLETED]
        assert run.attempts[0].hyper["learning_rate"] == t.params["learning_rate"]


def test_cancel_stops_running_trials_and_the_rest_never_start(
        farm, controller, micro, capsys, darknet_bin):
    farm.worker("gpu1", "gpu")
    code, out, err = cli(capsys, "sweep", "submit", str(spec(micro, """
    parameters: {learning_rate: [0.001, 0.002, 0.003]}
    budget: {iterations: 100000}
    objective: min_avg_loss
    concurrency: 2
    """)))
    assert code == 0 and "concurrency 2 is above the 1 worker(s) on queue 'gpu'" in err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    sweeps = store.sweeps
    first = wait_for(lambda: (t := sweeps.trials(sweep_id)[0]).run_id and t, 10,
                     what="the first trial's run")
    wait_for(lambda: int(store.progress.live(first.run_id).get("iteration", 0)) > 3, 30,
             what="the first trial training")
    code, out, err = cli(capsys, "sweep", "cancel", sweep_id)
    assert code == 0 and f"{sweep_id} cancelled" in out, err
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--json")
    doc = json.loads(out)
    assert doc["sweep"]["state"] == "cancelled"
    assert [r["state"] for r in sorted(doc["leaderboard"], key=lambda r: r["trial"])] == \
        ["cancelled", "cancelled", "cancelled"]
    assert store.runs.load(first.run_id).attempts[-1].outcome is Outcome.CANCELLED


def test_the_sweeps_summary_says_what_its_best_trial_was_really_trained_with(
        farm, controller, micro, capsys, darknet_bin):
    """lr 0.05 with no burn-in diverges on the micro net; its restarts lower the rate and
    it completes. The one trial is the best: the sweep's summary (`sweep show`, the board,
    `sweep list`) must not say 0.05 alone."""
    farm.worker("gpu1", "gpu")
    controller.start()
    code, out, err = cli(capsys, "sweep", "submit", str(spec(micro, """
    parameters: {learning_rate: [0.05]}
    budget: {iterations: 200}
    objective: min_avg_loss
    policy: {burn_in_min: 0, max_divergence_restarts: 6}
    """)))
    assert code == 0, err
    store = Store(farm.settings.effective_redis_url)
    sw = wait_sweep(store, out.strip(), 120)
    [trial] = store.sweeps.trials(sw.id)
    run = store.runs.load(trial.run_id)
    assert run.state is RunState.COMPLETED and len(run.attempts) > 1, run.attempts
    rate = run.attempts[-1].hyper["learning_rate"]
    assert re.search(r"best: trial 0 \(learning_rate=0\.05\) \[trained: learning_rate "
                     rf"0\.05 -> {re.escape(rate)}\b", sw.message), sw.message


def test_a_trial_still_at_zero_map_after_n_iterations_is_stopped_and_says_why(
        farm, controller, micro, capsys, darknet_bin):
    """Real evaluations (farm.eval's farm-native evaluator on an `eval` worker). Until
    farm.train schedules them itself, the test does what its checkpoint hook will: it
    sends each new finite checkpoint to `farm.eval.checkpoint`."""
    farm.worker("gpu1", "gpu")
    farm._spawn("eval1", [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n",
                          "eval1@testhost", "-Q", "eval", "-c", "1", "-I",
                          "workers.tasks.eval", "--disable-prefetch", "-l", "INFO"])
    farm.wait_ping("eval1@testhost")
    controller.start()
    code, out, err = cli(capsys, "sweep", "submit", str(spec(micro, """
    parameters: {learning_rate: [0.00001]}   # too low to learn anything in 100 iterations
    budget: {iterations: 200000}  # never reached: a fast machine trains the micro net
    eval_every: 100               # thousands of iterations before the first evaluation lands
    early_stopping: {zero_map_after: 100}
    """)))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    from workers.tasks.enqueue import enqueue_eval
    sent: set[int] = set()

    def evaluate_new_checkpoints():
        [trial] = store.sweeps.trials(sweep_id)
        if trial.run_id:
            for c in store.runs.load(trial.run_id).checkpoints:
                if c.finite and c.iteration not in sent:
                    sent.add(c.iteration)
                    enqueue_eval(trial.run_id, c.path, c.iteration)
        return store.sweeps.load(sweep_id).state is not SweepState.RUNNING
    wait_for(evaluate_new_checkpoints, 180, 0.1, what="the sweep to end")
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--json")
    [row] = json.loads(out)["leaderboard"]
    assert row["state"] == "stopped" and row["iterations"] < 200000
    # the note names the newest evaluation the controller saw: 100, or a later one when
    # the micro net's next checkpoint was scored before the controller's tick
    note = re.fullmatch(r"mAP@0\.50 still 0\.\d\d % \(under 1 %\) at iteration (\d+) "
                        r"\(early_stopping\.zero_map_after: 100\)", row["note"])
    assert note, row["note"]
    assert 100 <= int(note[1]) <= row["iterations"] < 200000
    assert row["best"] < 0.01 and row["best_iteration"] >= 100  # ranked by its mAP
    assert store.evaluations.all(row["run_id"])[0].evaluator == "opencv-dnn"


# -- the controller's guards, without workers: advance() with a recording enqueue ------


@pytest.fixture
def planned(farm_settings, micro):
    from farm.sweeps.service import submit_sweep
    from farm.sweeps.spec import load_spec
    store = Store(farm_settings.effective_redis_url)
    sw = submit_sweep(store, farm_settings, load_spec(spec(micro, """
    parameters: {learning_rate: [0.001, 0.002, 0.003, 0.004]}
    concurrency: 2
    """)))
    return store, sw.id


def test_concurrent_controllers_submit_each_trial_once(planned, farm_settings):
    store, sweep_id = planned
    sent: list[str] = []
    lock = threading.Lock()

    def enqueue(run_id, queue):
        with lock:
            sent.append(run_id)
        return f"task-{run_id}"
    threads = [threading.Thread(target=advance, args=(store, farm_settings, sweep_id),
                                kwargs={"enqueue": enqueue, "wait": 5.0}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = store.sweeps.trials(sweep_id)
    assert sorted(sent) == sorted(t.run_id for t in trials if t.run_id)
    assert len(sent) == len(set(sent)) == 2  # concurrency 2: trials 0 and 1, once each
    assert [t.index for t in trials if t.run_id] == [0, 1]


def test_a_controller_killed_before_enqueueing_leaves_the_run_to_be_resent_not_replaced(
        planned, farm_settings):
    store, sweep_id = planned

    def dies(run_id, queue):
        raise KeyboardInterrupt("killed between assigning the run and enqueueing it")
    with pytest.raises(KeyboardInterrupt):
        advance(store, farm_settings, sweep_id, enqueue=dies)
    [orphaned] = [t for t in store.sweeps.trials(sweep_id) if t.run_id]
    sent = []
    tick = advance(store, farm_settings, sweep_id, enqueue=lambda r, q: sent.append(r) or "t")
    assert tick.resent == [orphaned.run_id]                    # the same run, sent again
    assert [r for _, r in tick.started] == sent[1:]            # and one more trial started
    trials = store.sweeps.trials(sweep_id)
    assert trials[orphaned.index].run_id == orphaned.run_id
    assert len([r for r in store.runs.recent() if r.sweep == sweep_id]) == 2


def test_a_controller_killed_before_assigning_leaves_no_ghost_run(planned, farm_settings,
                                                                  monkeypatch):
    store, sweep_id = planned

    def killed(self, sweep_id, index, run_id):
        raise KeyboardInterrupt("killed between submitting the run and assigning it")
    with monkeypatch.context() as m:
        m.setattr(SweepStore, "assign_run", killed)
        with pytest.raises(KeyboardInterrupt):
            advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "t")
    [ghost] = [r for r in store.runs.recent() if r.sweep == sweep_id]
    advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "t")
    ghost = store.runs.load(ghost.id)
    assert ghost.state is RunState.CANCELLED and "never enqueued" in ghost.message
    trials = store.sweeps.trials(sweep_id)
    assert trials[0].run_id and trials[0].run_id != ghost.id


def test_the_end_of_run_hook_starts_the_next_trial_at_once(planned, farm_settings):
    """What `farm.train` calls when a sweep's run ends (workers/tasks/sweep.py)."""
    from workers.app import app, configure
    configure(app, farm_settings)
    from workers.tasks.sweep import on_run_finished
    store, sweep_id = planned
    sweeps = store.sweeps
    advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "t")  # trials 0 and 1
    run = store.runs.load(sweeps.trials(sweep_id)[0].run_id)
    on_run_finished(run)  # still queued: nothing to do
    assert sweeps.trials(sweep_id)[2].run_id is None
    run.state, run.ended_at = RunState.COMPLETED, 1.0
    store.runs.save(run)
    on_run_finished(run)
    third = sweeps.trials(sweep_id)[2]
    assert third.run_id and third.task_id and third.enqueued_at
    assert store.runs.load(third.run_id).state is RunState.QUEUED
    assert sweeps.trials(sweep_id)[0].result["state"] == "completed"
