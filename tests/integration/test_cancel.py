"""Cancel and reap as domain functions (farm.runs.cancel, farm.runs.reaper.reap) on a real
redis-server: what each writes, and that a finished run is left as it ended."""
from __future__ import annotations

import time

import pytest

from farm.runs.cancel import Cancel, cancel
from farm.runs.model import Run, RunState, new_run_id
from farm.runs.reaper import reap
from farm.store import Store


@pytest.fixture
def store(farm_settings) -> Store:
    return Store(farm_settings.effective_redis_url)


def a_run(store: Store, state: RunState = RunState.QUEUED, **fields) -> Run:
    run_id = new_run_id()
    run = Run(id=run_id, data="/d/obj.data", cfg="/d/micro.cfg", weights=None,
              base_dir="/d", overrides={}, policy={}, host="testhost",
              created_at=time.time(), max_batches=100, state=state, task_id=f"task-{run_id}",
              **fields)
    store.runs.save(run)
    return run


def test_a_queued_run_no_one_holds_is_cancelled_at_once_its_task_revoked_first(store):
    run = a_run(store)
    seen = []

    def revoke(task_id: str) -> None:  # `farm cancel` revokes through the broker
        seen.append((task_id, store.runs.load(run.id).state))

    assert cancel(store, run, revoke=revoke) is Cancel.BEFORE_START
    assert seen == [(run.task_id, RunState.QUEUED)]
    stored = store.runs.load(run.id)
    assert (stored.state, stored.message) == (RunState.CANCELLED, "cancelled before it started")
    assert stored.ended_at is not None and store.runs.cancel_requested(run.id)


@pytest.mark.parametrize("held", [False, True])
def test_a_run_a_worker_holds_is_asked_to_stop_and_left_to_its_worker(store, held):
    """Running, or queued but taken by a worker a moment ago: the worker reads the flag,
    stops darknet and ends the run itself."""
    run = a_run(store, RunState.QUEUED if held else RunState.RUNNING, worker="gpu0@h:1")
    if held:
        assert store.runs.lease(run.id, "gpu0@testhost", 30).acquire()
    revoked = []
    assert cancel(store, run, "not this", revoke=revoked.append) is Cancel.ASKED
    assert store.runs.cancel_requested(run.id) and revoked == []
    assert store.runs.load(run.id).to_dict() == run.to_dict()


@pytest.mark.parametrize("end", [s for s in RunState if s.finished])
def test_a_finished_run_is_left_as_it_ended(store, end):
    run = a_run(store, end, message="as it ended", ended_at=123.0)
    assert cancel(store, run, revoke=lambda task_id: pytest.fail("revoked")) is Cancel.ENDED
    assert not store.runs.cancel_requested(run.id)
    assert store.runs.load(run.id).to_dict() == run.to_dict()


def test_reap_queues_the_runs_no_one_holds_and_a_refused_send_is_tried_next_pass(store):
    """The stand-in: `enqueue` refuses one run as a broker that went away would; the
    others are queued, the refused one stays running (no lease) for the next pass."""
    lost = [a_run(store, RunState.RUNNING, worker=f"gpu{n}@gone:1") for n in range(3)]
    done = a_run(store, RunState.COMPLETED)
    store.db.r.sadd("farm:runs:running", done.id)  # a stale member: dropped, not resumed
    sent = []

    def enqueue(run_id: str, queue: str | None, task_id: str) -> None:
        if run_id == lost[1].id:
            raise ConnectionError("the broker went away")
        sent.append((run_id, task_id))

    assert sorted(reap(store, enqueue)) == sorted([lost[0].id, lost[2].id])
    for run in (lost[0], lost[2]):
        stored = store.runs.load(run.id)
        assert stored.state is RunState.QUEUED and (run.id, stored.task_id) in sent
        assert stored.message == f"the lease of worker {run.worker} expired; resubmitted"
        assert stored.worker == run.worker  # named in the next attempt's LOST message
    assert store.runs.load(lost[1].id).state is RunState.RUNNING
    assert set(store.runs.running_leases()) == {lost[1].id}
    assert store.runs.load(done.id).state is RunState.COMPLETED
    sent.clear()
    assert reap(store, lambda run_id, queue, task_id: sent.append(run_id)) == [lost[1].id]
    assert store.runs.running_leases() == {}
