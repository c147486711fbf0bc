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
from farm.store import Store
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
    sup = Supervisor(progress=store.progress, run=run, attempt=attempt,
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
    assert [int(m["i"]) for _, m in store.progress.metrics("replay")] == list(range(1, 9))
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


HANKAI_CPU_CANCEL = """\
Darknet V5 "Moonlit" v5.1-104
Type "yes" to begin training, or anything else to quit: 
* * * * * * * * * * * * * * * * * * * * * * * * * * * * *
* Error location: src-lib/detector.cpp, train_detector(), line #178
* Error message:  Cancel the attempt to train a neural network using a CPU.
* Thread #1: main darknet thread
* Version "Moonlit" v5.1-104 built on Jun 27 2026
* * * * * * * * * * * * * * * * * * * * * * * * * * * * *
backtrace (3 entries):
1/3: darknet(+0x1f2a1) [0x5599]
known threads: 1
"""


def test_hank_ai_refusing_cpu_training_is_bad_input_in_its_own_words(tmp_path, store):
    """Synthetic hank-ai output (darknet.md §9: no "yes" on stdin, rc 134): not a crash,
    and never retried with the same settings."""
    log = tmp_path / "hankai-cpu-cancel.log"
    log.write_text(HANKAI_CPU_CANCEL)
    a, _ = replay(log, tmp_path / "run", store)
    assert a.outcome is Outcome.BAD_INPUT
    assert a.message == "refused: Cancel the attempt to train a neural network using a CPU."


def test_cuda_out_of_memory_replayed_is_out_of_memory(tmp_path, store):
    """A stand-in for a GPU: AlexeyAB's CUDA allocation failure as it prints it
    (dark_cuda.c cuda_make_array's hint, then check_error's `CUDA Error` and error())."""
    log = tmp_path / "alexeyab-cuda-oom.log"
    log.write_text(
        "mini_batch = 2, batch = 64, time_steps = 1, train = 1 \n"
        "   layer   filters  size/strd(dil)      input                output\n"
        "   0  Try to set subdivisions=64 in your cfg-file. \n"
        "CUDA status Error: file: ./src/dark_cuda.c : () : line: 373 : build time: Dec 15 2025\n"
        "\n CUDA Error: out of memory\n"
        "Darknet error location: ./src/dark_cuda.c, check_error(), line #69\n"
        "CUDA Error: out of memory: File exists\n")
    a, _ = replay(log, tmp_path / "run", store)
    assert a.outcome is Outcome.OUT_OF_MEMORY and "out of memory" in a.message


@pytest.mark.parametrize("name", [
    "alexeyab-cpu-train-ok.log", "alexeyab-cpu-train-nan.log", "alexeyab-cpu-train-resume.log",
    "alexeyab-gpu-h100-train-map.log", "alexeyab-cpu-map.log", "pjreddie-debian-cpu-train.log",
    "pjreddie-debian-cpu-train-micro.log", "pjreddie-debian-cpu-train-nan-inf.log"])
def test_real_logs_are_never_read_as_out_of_memory_or_a_refusal(name):
    from farm.darknet.events import DarknetError, ErrorKind
    from farm.darknet.logparse import parse_file
    kinds = {e.kind for e in parse_file(shared_path("darknet", "logs", name))
             if isinstance(e, DarknetError)}
    assert not kinds & {ErrorKind.OUT_OF_MEMORY, ErrorKind.REFUSED}, kinds
