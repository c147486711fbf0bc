"""What Flower shows of the farm, read through Flower's own API (/api/tasks,
/api/task/info, the workers' counters) from a real Flower process, while real workers,
beat and Debian's darknet do the work: the trainings, evaluations and datasets, not the
housekeeping; a failed run as FAILURE with its reason, a cancelled one as REVOKED; every
training named after its run (and its sweep's trial), however it was sent.

Flower's login comes from FLOWER_BASIC_AUTH in its environment, never from its argv.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import psutil
import pytest

from farm.runs.model import RunState
from farm.runs.service import submit_run
from farm.store import Store
from farm.sweeps.model import SweepState
from farm.sweeps.service import advance
from tests.conftest import REPO, blank_line_in_train_list, free_port, wait_for
from tests.integration.test_eval import farm_cli, start_eval_worker
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration

PASSWORD = "flower-s3cret"
HOUSEKEEPING = ("farm.reap", "farm.sweep.tick_all")


class Flower:
    """A real Flower on a free port, and its HTTP API."""

    def __init__(self, farm):
        self.port = free_port()
        farm._spawn("flower", [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
                               "--address=127.0.0.1", f"--port={self.port}"],
                    env={"FLOWER_BASIC_AUTH": f"farm:{PASSWORD}"})
        self.auth = "Basic " + base64.b64encode(f"farm:{PASSWORD}".encode()).decode()
        wait_for(lambda: self.get("/api/workers") is not None, 30, 0.3,
                 what=f"Flower to answer (log: {farm.tmp / 'flower.log'})")

    def get(self, path: str):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     headers={"Authorization": self.auth})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except (OSError, urllib.error.HTTPError):
            return None

    def task(self, task_id: str) -> dict:
        return self.get(f"/api/task/info/{task_id}") or {}

    def wait_state(self, task_id: str, state: str, timeout: float = 60) -> dict:
        return wait_for(lambda: (t := self.task(task_id)).get("state") == state and t,
                        timeout, 0.3, what=f"task {task_id} to be {state} in Flower "
                                           f"(now {self.task(task_id).get('state')})")

    def tasks(self) -> dict[str, dict]:
        return self.get("/api/tasks") or {}

    def counters(self, worker: str) -> dict:
        rows = (self.get("/workers?json=1") or {}).get("data", [])
        return next((r for r in rows if r.get("hostname") == worker), {})


@pytest.fixture
def micro(tmp_path):
    return micro_dataset(tmp_path / "ds", images=16), tmp_path


def test_a_failed_run_is_failure_with_its_reason_and_a_cancelled_one_revoked(
        farm, micro, capsys, darknet_bin):
    data, tmp = micro
    flower = Flower(farm)
    store = Store(farm.settings.effective_redis_url)

    cfg = micro_cfg(tmp / "micro.cfg", max_batches=20)
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    train_list = blank_line_in_train_list(data)  # after submit: the worker refuses it
    farm.worker("gpu1")
    failed = wait_for(lambda: (r := store.runs.load(out.strip())).state.finished and r, 120,
                      0.2, what="the run to end")
    assert failed.state is RunState.FAILED
    task = flower.wait_state(failed.task_id, "FAILURE")
    assert task["name"] == f"farm.train {failed.id}"
    assert "RunFailed" in task["exception"] and "bad input, not retried" in task["exception"]
    assert f"{train_list}:3" in task["exception"] and "blank line" in task["exception"]
    counters = wait_for(lambda: (c := flower.counters("gpu1@testhost")).get("task-failed")
                        and c, 20, 0.3, what="Flower's Failed counter")
    assert counters["task-failed"] == 1 and not counters.get("task-succeeded")

    train_list.write_text(train_list.read_text().replace("\n\n", "\n"))  # mended
    long = micro_cfg(tmp / "long.cfg", max_batches=100000)
    code, out, err = farm_cli(capsys, "train", str(data), str(long))
    assert code == 0, err
    run = store.runs.load(out.strip())
    task = wait_for(lambda: (t := flower.task(run.task_id)).get("state") == "PROGRESS"
                    and "it/s" in t.get("result", "") and t, 60, 0.3,
                    what="progress with a speed in Flower")  # the custom state to beat
    assert re.search(r"iteration \d+/100000 \(0 %\), [\d.]+ it/s, ETA \d", task["result"])
    code, out, err = farm_cli(capsys, "cancel", run.id)
    assert code == 0, err
    task = flower.wait_state(run.task_id, "REVOKED", 30)
    assert task["name"] == f"farm.train {run.id}"
    assert "cancelled" in task["result"]
    from workers.app import app
    assert app.AsyncResult(run.task_id).state == "REVOKED"  # the result backend agrees
    assert store.runs.load(run.id).state is RunState.CANCELLED


def test_a_run_resubmitted_by_the_reaper_is_named_after_its_run_and_trial_while_queued(
        farm, micro, darknet_bin):
    """A trial whose worker died (RUNNING, no lease): beat's reaper sends it again. No
    GPU worker is up, so Flower knows it only from its `task-sent` event."""
    data, tmp = micro
    flower = Flower(farm)
    store = Store(farm.settings.effective_redis_url)
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=50)
    run = submit_run(store, farm.settings, data=str(data), cfg=str(cfg), sweep="s-lost",
                     trial=3, task_id="old-task")
    run.state, run.worker = RunState.RUNNING, "gpu9@gone:1"
    store.runs.save(run)
    farm.worker("cpu1", "cpu")
    farm.beat()
    new_id = wait_for(lambda: (r := store.runs.load(run.id)).task_id != "old-task"
                      and r.task_id, 30, 0.2, what="the reaper to resubmit the run")
    task = flower.wait_state(new_id, "PENDING", 30)
    assert task["name"] == f"farm.train {run.id} s-lost#3"


def test_the_task_of_a_worker_killed_outright_ends_as_failure_naming_its_successor(
        farm, micro, capsys, darknet_bin):
    """A worker whose main process is killed says nothing more: without the reaper its
    task would stay PROGRESS in Flower for ever, under the run now training again."""
    data, tmp = micro
    flower = Flower(farm)
    store = Store(farm.settings.effective_redis_url)
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=400)
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    run = store.runs.load(out.strip())
    first = farm.worker("gpu1")
    farm.worker("cpu1", "cpu")  # beat's reaper runs here, as in `farm up`
    farm.beat()
    flower.wait_state(run.task_id, "PROGRESS")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no goodbye
    first.wait(10)
    farm.worker("gpu2")
    again = wait_for(lambda: (r := store.runs.load(run.id)).task_id != run.task_id and r,
                     60, 0.2, what="the reaper to resubmit the run")
    task = flower.wait_state(run.task_id, "FAILURE", 30)
    assert task["worker"] == "gpu1@testhost"  # filed under the worker that ran it
    assert re.fullmatch(rf"WorkerLostError\('the process of worker gpu1@testhost:\d+ is gone; "
                        rf"resubmitted as task {again.task_id}'\)", task["exception"]), \
        task["exception"]
    from workers.app import app
    assert app.AsyncResult(run.task_id).state == "FAILURE"  # the result backend agrees
    assert flower.wait_state(again.task_id, "SUCCESS", 120)["worker"] == "gpu2@testhost"
    assert store.runs.load(run.id).state is RunState.COMPLETED


SWEEP = """
base: {{data: {data}, cfg: {cfg}}}
parameters:
  learning_rate: [0.004, 0.002, 0.001]
concurrency: 1
budget: {{iterations: 200}}
eval_every: 100
objective: map50
"""


def test_after_a_sweep_flower_lists_its_work_not_the_housekeeping(farm, micro, darknet_bin):
    """And `farm sweep submit --wait` ends once the sweep has closed, which it does only
    after its trials' last evaluations are recorded."""
    data, tmp = micro
    flower = Flower(farm)
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=1000)
    spec = tmp / "sweep.yaml"
    spec.write_text(textwrap.dedent(SWEEP.format(data=data, cfg=cfg)))
    farm.worker("gpu1", "gpu")
    evaluator = start_eval_worker(farm)
    farm.worker("cpu1", "cpu")  # beat's housekeeping runs here, as in `farm up`
    farm.beat()
    store = Store(farm.settings.effective_redis_url)
    sweeps = store.sweeps
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "sweep", "submit",
                             str(spec), "--wait"], cwd=str(REPO), env=farm.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweep_id = proc.stdout.readline().strip()
    # the last trial's later evaluations (its final checkpoint's among them) are held
    # back: the eval worker's pool is paused once its first evaluation is in
    last = wait_for(lambda: (t := sweeps.trials(sweep_id)[2]).run_id
                    and store.evaluations.all(t.run_id) and t, 120, 0.1,
                    what="the last trial's first evaluation")
    pool = psutil.Process(evaluator.pid).children()
    for child in pool:
        child.suspend()
    try:
        wait_for(lambda: store.runs.load(last.run_id).state.finished, 60, 0.2,
                 what="the last trial's run")
        # what the run-finished and evaluation hooks do: the sweep waits to close
        tick = advance(store, farm.settings, sweep_id, wait=10.0, early_stop=False,
                       evaluators=lambda: True,
                       enqueue=lambda run_id, queue: pytest.fail("nothing is left to start"))
        assert 200 in tick.waiting[last.run_id]
        assert sweeps.load(sweep_id).state is SweepState.RUNNING and proc.poll() is None
    finally:
        for child in pool:
            child.resume()
    out, err = proc.communicate(timeout=120)
    trials = sweeps.trials(sweep_id)
    # --wait ended after every evaluation its trials sent was recorded
    assert {t.run_id: store.evaluations.pending(t.run_id) for t in trials} == \
        {t.run_id: set() for t in trials}
    assert proc.returncode == 0, err
    sweep = sweeps.load(sweep_id)
    assert sweep.state is SweepState.DONE and "not evaluated" not in sweep.message
    assert "trial 2: evaluation of iteration 200: mAP@0.50" in err
    assert f"sweep {sweep_id} (sweep): done - 3 completed; best: trial" in out

    # beat keeps its housekeeping going for a while after the sweep
    def ticks() -> int:
        return len(re.findall(r"farm\.sweep\.tick_all\[[^]]+\] succeeded", farm.log("cpu1")))
    start = ticks()
    wait_for(lambda: ticks() >= start + 5, 30, 0.5, what="beat's ticks after the sweep")
    reaps = len(re.findall(r"farm\.reap\[[^]]+\] succeeded", farm.log("cpu1")))
    assert ticks() >= 10 and reaps >= 10, (ticks(), reaps)  # it really ran, and often

    time.sleep(2)  # the last events reach Flower
    listed = flower.tasks()
    names = [t.get("name") or "" for t in listed.values()]
    housekeeping = [n for n in names if n.startswith(HOUSEKEEPING)]
    assert len(housekeeping) <= 0.1 * len(names), (len(housekeeping), len(names))
    trains = {t.run_id: listed.get(t.task_id) for t in trials}
    for t in trials:  # every trial's training, under its name, done; the board links it
        run = store.runs.load(t.run_id)
        assert run.task_id == t.task_id
        assert trains[t.run_id]["name"] == f"farm.train {t.run_id} {sweep_id}#{t.index}"
        assert trains[t.run_id]["state"] == "SUCCESS"
        from dashboard.board import run_payload
        url = run_payload(store, t.run_id, farm.settings)["flower_url"]
        assert url.endswith(f"/task/{t.task_id}")
    evals = [n for n in names if n.startswith("farm.eval.checkpoint")]
    assert len(evals) == sum(len(store.evaluations.all(t.run_id)) for t in trials) >= 6
    print(f"Flower listed {len(names)} tasks: {len(trains)} trainings, {len(evals)} "
          f"evaluations, {len(housekeeping)} housekeeping; {ticks()} ticks and {reaps} "
          "reaps ran meanwhile")
