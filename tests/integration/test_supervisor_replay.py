"""The supervisor on real darknet output from ../shared, replayed by a real process.

`cat LOG` stands in for darknet here: the bytes are the ones darknet printed (AlexeyAB's
nan run, Debian's inf/-nan run, a filters/classes abort), delivered through a pipe as
darknet would, so the watchdog rules are checked on the exact lines users see.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from farm.darknet.process import DarknetProcess
from farm.runs.model import Attempt, Outcome, Run
from farm.runs.policy import Policy
from farm.runs.supervisor import Limits, Supervisor
from farm.state import Store
from tests.conftest import shared_path

pytestmark = pytest.mark.integration


def replay(log: Path, tmp_path: Path, store: Store, max_batches: int = 40,
           **policy) -> tuple[Attempt, Run]:
    tmp_path.mkdir(exist_ok=True)
    run = Run(id="replay", data="", cfg="", weights=None, base_dir="", overrides={},
              policy={}, host="h", created_at=time.time(), max_batches=max_batches)
    attempt = Attempt(number=1, command=["cat", str(log)], hyper={}, start_weights=None,
                      start_iteration=0, host="h", workdir=str(tmp_path),
                      log_path=str(tmp_path / "darknet.log"), started_at=time.time())
    run.attempts.append(attempt)
    sup = Supervisor(store=store, run=run, attempt=attempt,
                     process=DarknetProcess(["cat", str(log)], tmp_path),
                     limits=Limits(max_batches=max_batches, burn_in=0, policy=Policy(**policy)),
                     checkpoints_dir=tmp_path / "checkpoints")
    return sup.supervise(), run


@pytest.fixture
def store(farm_settings) -> Store:
    return Store(farm_settings.effective_redis_url)


def test_alexeyab_nan_run_is_stopped_at_iteration_8(tmp_path, store):
    log = shared_path("darknet", "logs", "alexeyab-cpu-train-nan.log")
    a, run = replay(log, tmp_path, store)
    assert a.outcome is Outcome.DIVERGED and a.first_bad_iteration == 8
    assert "non-finite avg loss at iteration 8" in a.message
    assert [int(m["i"]) for _, m in store.metrics("replay")] == list(range(1, 9))
    assert (tmp_path / "darknet.log").read_bytes() == log.read_bytes()[:len(
        (tmp_path / "darknet.log").read_bytes())]


def test_debian_inf_run_is_stopped_by_the_loss_bound_before_inf(tmp_path, store):
    log = shared_path("darknet", "logs", "pjreddie-debian-cpu-train-nan-inf.log")
    a, _ = replay(log, tmp_path, store)
    assert a.outcome is Outcome.DIVERGED and a.first_bad_iteration == 2
    assert "above the bound" in a.message
    a, _ = replay(log, tmp_path / "nobound", store, loss_bound=float("inf"))
    assert a.first_bad_iteration == 3 and "non-finite" in a.message


def test_a_filters_mismatch_abort_is_bad_input(tmp_path, store):
    log = shared_path("darknet", "logs", "alexeyab-cpu-filters-mismatch.log")
    a, _ = replay(log, tmp_path, store)
    assert a.outcome is Outcome.BAD_INPUT
    assert "filters= in the [convolutional]-layer doesn't correspond to classes=" in a.message


def test_completion_is_judged_from_the_log_not_the_exit_code(tmp_path, store):
    log = shared_path("darknet", "logs", "alexeyab-cpu-train-ok.log")  # 20 iterations, _final
    a, _ = replay(log, tmp_path, store, max_batches=20)
    assert a.outcome is Outcome.COMPLETED and a.last_iteration == 20
    # same output, exit code 0, but the run was meant to go to 1000: not a success
    a, _ = replay(log, tmp_path / "short", store, max_batches=1000)
    assert a.exit_code == 0 and a.outcome is Outcome.CRASHED
    assert "at iteration 20" in a.message
