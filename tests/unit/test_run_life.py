"""farm.runs.life.move, the one place a run's state changes: what each move writes, and
the guard that a finished run never changes again."""
from __future__ import annotations

import time

import pytest

from farm.errors import FarmError, StateConflict
from farm.runs.life import move
from farm.runs.model import Run, RunState

FINISHED = [s for s in RunState if s.finished]


def a_run(state: RunState = RunState.QUEUED, **fields) -> Run:
    return Run(id="r-life", data="/d/obj.data", cfg="/d/micro.cfg", weights=None,
               base_dir="/d", overrides={}, policy={}, host="testhost",
               created_at=time.time(), max_batches=100, state=state, **fields)


def test_a_worker_takes_a_queued_run_and_its_name_is_recorded():
    run = move(a_run(message="waiting for a host"), RunState.RUNNING, worker="gpu0@h:1")
    assert (run.state, run.worker, run.ended_at) == (RunState.RUNNING, "gpu0@h:1", None)
    assert run.message == "waiting for a host"  # no message given: the old one stays


def test_back_to_queued_clears_the_worker_only_when_asked():
    waits = move(a_run(RunState.RUNNING, worker="gpu0@h:1"), RunState.QUEUED,
                 "waiting for disk space", worker=None)
    assert (waits.state, waits.worker, waits.message) == (RunState.QUEUED, None,
                                                          "waiting for disk space")
    # the reaper keeps the lost worker's name: the next attempt's message says who it was
    lost = move(a_run(RunState.RUNNING, worker="gpu0@h:1"), RunState.QUEUED, "resubmitted")
    assert (lost.state, lost.worker) == (RunState.QUEUED, "gpu0@h:1")
    assert move(lost, RunState.RUNNING).worker == "gpu0@h:1"  # a send that failed


@pytest.mark.parametrize("end", FINISHED)
@pytest.mark.parametrize("start", [RunState.QUEUED, RunState.RUNNING])
def test_an_unfinished_run_ends_with_its_message_and_time(start, end):
    before = time.time()
    run = move(a_run(start), end, f"it {end.value}")
    assert run.state is end and run.message == f"it {end.value}"
    assert before <= run.ended_at <= time.time()


@pytest.mark.parametrize("to", list(RunState))
@pytest.mark.parametrize("end", FINISHED)
def test_a_finished_run_never_changes_again(end, to):
    """Not running again, not queued again, not ended twice: a cancelled run stays
    cancelled. The refusal is the farm's own error and leaves the record as it was."""
    run = a_run(end, message="as it ended", ended_at=123.0, worker="gpu0@h:1")
    with pytest.raises(StateConflict, match=f"r-life is {end.value}: it cannot become "
                                            f"{to.value}") as refused:
        move(run, to, "changed", worker="gpu1@h:2")
    assert isinstance(refused.value, FarmError) and refused.value.hint
    assert (run.state, run.message, run.ended_at, run.worker) == (
        end, "as it ended", 123.0, "gpu0@h:1")
