"""Restarts that keep their meaning: real redis-server, real Celery workers, Debian's darknet.

The rate a restarted attempt trains at is read from darknet's own `rate` column (its
log), not from what the farm meant to write; a real allocation failure comes from darknet
running under the farm's memory limit; crashes are real signals sent to darknet.
"""
from __future__ import annotations

import json
import os
import signal

import pytest

from farm.darknet.events import Iteration
from farm.darknet.logparse import parse_file
from farm.runs.model import Outcome, RunState
from farm.store import Store
from tests.conftest import wait_for
from tests.integration.test_training import cli, store_of, wait_run
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def micro(tmp_path):
    return micro_dataset(tmp_path / "ds", images=16), tmp_path


def rates(log: str) -> dict[int, float]:
    """darknet's printed rate by iteration, from an attempt's log."""
    return {e.number: e.rate for e in parse_file(log) if isinstance(e, Iteration)}


def test_a_diverging_run_warms_up_again_after_each_restart_and_reaches_its_rate(
        farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=300)
    farm.worker("gpu1")
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--set", "learning_rate=0.05",
                         "--set", "burn_in=0", "--wait")
    run = store_of(farm).runs.load(out.splitlines()[0])
    assert code == 0, (out, err, [(a.outcome, a.message) for a in run.attempts])
    assert run.attempts[0].outcome is Outcome.DIVERGED, "lr 0.05, burn_in 0 must diverge"
    for a in run.attempts[1:]:
        printed = rates(a.log_path)
        first, end = min(printed), int(a.hyper["burn_in"])
        target = float(a.hyper["learning_rate"])  # the rate as written (steps folded in)
        # darknet's own column: a tenth of the target at most on the first iteration...
        assert first == a.start_iteration + 1
        assert printed[first] <= target / 10 + 1e-6, (a.number, printed[first], target)
        # ...the target within the window (max(100, 2 %)), before half of what is left...
        assert end - a.start_iteration <= 100 and end <= a.start_iteration + (
            300 - a.start_iteration) // 2
        # ...where darknet prints it (for an attempt that got there)
        if a.last_iteration >= end:
            assert printed[end] == pytest.approx(target, abs=1e-6)
    last = run.attempts[-1]
    assert last.outcome is Outcome.COMPLETED and last.last_iteration == 300
    assert int(last.hyper["burn_in"]) < 300  # it reached its rate before max_batches
    want = f"learning_rate 0.05 -> {last.rate_value:g}"
    code, out, _ = cli(capsys, "status", run.id)
    assert f"trained with: {want}" in out and f"after {len(run.attempts) - 1} restart" in out
    code, out, _ = cli(capsys, "status", run.id, "--json")
    doc = json.loads(out)
    assert doc["effective"]["effective"]["learning_rate"] == f"{last.rate_value:g}"
    assert doc["effective"]["requested"]["learning_rate"] == "0.05"
    code, out, _ = cli(capsys, "runs")
    assert want in out


def test_a_real_allocation_failure_is_out_of_memory_and_the_next_attempt_doubles_subdivisions(
        farm, micro, capsys, darknet_bin):
    """darknet under the farm's memory limit (RLIMIT_DATA, 820 MiB): at 512x512 its
    buffers do not fit with subdivisions=1 (measured: fails up to 860 MiB) and do with 2
    (fits from 780 MiB); Debian's darknet says `Thread creation failed: Cannot allocate
    memory`."""
    data, tmp = micro
    cfg = micro_cfg(tmp / "big.cfg", max_batches=2, size=512)
    farm.worker("gpu1", env={"FARM_DARKNET_MEMORY_LIMIT": "820"})
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--wait")
    run = store_of(farm).runs.load(out.splitlines()[0])
    outcomes = [a.outcome for a in run.attempts]
    assert outcomes == [Outcome.OUT_OF_MEMORY, Outcome.COMPLETED], \
        [(a.outcome, a.message) for a in run.attempts]
    first, second = run.attempts
    assert "Cannot allocate memory" in first.message
    assert second.changes == {"subdivisions": ["1", "2"]}
    assert "subdivisions=2" in open(os.path.join(second.workdir, "net.cfg")).read()
    code, out, _ = cli(capsys, "status", run.id)
    assert "attempt 1 [out_of_memory]" in out
    assert "trained with: subdivisions 1 -> 2 after 1 restart" in out


def _kill_when(store: Store, run_id: str, attempt: int, predicate, what: str) -> None:
    def ready():
        run = store.runs.load(run_id)
        a = run.current
        return a and a.number == attempt and a.pid and not a.finished and predicate(run, a)
    wait_for(ready, 120, 0.05, what=what)
    os.kill(store.runs.load(run_id).current.pid, signal.SIGSEGV)


def _training(store: Store, run_id: str):
    """Whether the run's current attempt has printed an iteration."""
    return lambda run, a: store.progress.live(run_id).get("attempt") == str(a.number)


def test_two_crashes_far_apart_go_on_and_a_crash_loop_ends_the_run(farm, micro, capsys,
                                                                    darknet_bin):
    data, tmp = micro
    farm.worker("gpu1")
    store = store_of(farm)
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=400)
    code, out, _ = cli(capsys, "train", str(data), str(cfg))
    run_id = out.strip()

    def progressed(run, a):  # a checkpoint 100 iterations past where the attempt started
        return any(c.attempt == a.number and c.iteration >= a.start_iteration + 100
                   for c in run.checkpoints)
    _kill_when(store, run_id, 1, progressed, "attempt 1's first checkpoint")
    _kill_when(store, run_id, 2, progressed, "attempt 2's first checkpoint")
    run = wait_run(store, run_id)
    assert [a.outcome for a in run.attempts] == [Outcome.CRASHED, Outcome.CRASHED,
                                                 Outcome.COMPLETED], run.message
    assert run.attempts[2].start_iteration >= 200 and "SIGSEGV" in run.attempts[1].message

    code, out, _ = cli(capsys, "train", str(data), str(cfg), "--policy", "crash_restarts=4")
    run_id = out.strip()
    for n in range(1, 6):  # each attempt dies before it gets anywhere
        _kill_when(store, run_id, n, _training(store, run_id), f"attempt {n} to train")
    run = wait_run(store, run_id)
    assert [a.outcome for a in run.attempts] == [Outcome.CRASHED] * 5
    assert run.state is RunState.FAILED
    assert "5 attempts crashed in a row without 100 iterations of progress" in run.message


def test_start_weights_past_max_batches_are_bad_input_not_a_crash_loop(farm, micro, capsys,
                                                                       darknet_bin):
    """Weights whose header says iteration 1000 (seen 4000 at batch 4), e.g. a damaged or
    finished file: darknet resumes past max_batches 50 and writes its final weights at
    once (exit 0): bad input, said why, not a crash retried nor a completion."""
    import struct
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=50)
    weights = tmp / "done.weights"
    weights.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 4000) + bytes(27176))
    farm.worker("gpu1")
    code, out, _ = cli(capsys, "train", str(data), str(cfg), str(weights), "--wait")
    run = store_of(farm).runs.load(out.splitlines()[0])
    assert code == 1 and [a.outcome for a in run.attempts] == [Outcome.BAD_INPUT]
    assert "iteration 1000" in run.attempts[0].message and "trained nothing" in run.message
    assert run.good_checkpoint is None


def test_farm_train_rounds_eval_every_to_what_debian_darknet_writes(farm, micro, capsys,
                                                                    darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=1000)
    code, out, err = cli(capsys, "train", str(data), str(cfg), "--eval-every", "40",
                         "--set", "max_batches=500")
    assert code == 0
    run = store_of(farm).runs.load(out.strip())
    assert "warning: eval_every 40 rounded to 100" in err and run.eval_every == 100
    assert run.overrides["steps"] == "400,450"  # 800,900 of 1000, moved with max_batches
    cli(capsys, "cancel", run.id)
