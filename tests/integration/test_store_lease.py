"""farm.store.lease on a real redis-server: one Lease for a run, a sweep's lock and a
recipe's build, holding off every other holder until it is let go or expires."""
from __future__ import annotations

import json
import os
import time

import pytest

from farm.errors import LeaseLost, RedisUnreachable
from farm.store import Store
from farm.store.lease import Lease, holder_pid
from tests.conftest import free_port, wait_for


@pytest.fixture
def store(farm_settings) -> Store:
    return Store(farm_settings.effective_redis_url)


def test_one_holder_at_a_time_and_the_token_names_the_process(store):
    mine = Lease(store.db, "farm:test:lease", 30, owner="gpu0@testhost")
    other = Lease(store.db, "farm:test:lease", 30, owner="gpu1@testhost")
    assert mine.acquire() and mine.acquire()  # a retried call that got it keeps it
    assert not other.acquire()
    assert json.loads(mine.token)["worker"] == "gpu0@testhost"
    assert holder_pid(store.db.r.get("farm:test:lease")).pid == os.getpid()
    other.release()  # not the holder: nothing happens
    assert store.db.r.get("farm:test:lease") == mine.token
    with pytest.raises(LeaseLost):
        other.renew()
    mine.release()
    assert other.acquire()


def test_a_run_lease_joins_the_running_set_as_it_is_taken(store):
    lease = store.runs.lease("r-lease", "gpu0@testhost", 30)
    assert store.runs.running_leases() == {}
    assert lease.acquire()
    assert store.runs.running_leases() == {"r-lease": lease.token}
    assert store.runs.holder("r-lease") == lease.token


def test_held_waits_for_the_holder_and_lets_go_at_the_end(store):
    first = Lease(store.db, "farm:test:lock", 0.3)
    with first.held() as got:
        assert got
        with Lease(store.db, "farm:test:lock", 0.3).held(wait=0.05) as second:
            assert not second  # kept longer than it waited
        with Lease(store.db, "farm:test:lock", 0.3).held(wait=10) as third:
            assert third  # the TTL freed it (the first never let go)
    assert store.db.r.get("farm:test:lock") is None


def test_keep_alive_renews_and_says_when_the_lease_was_taken(store):
    lease = Lease(store.db, "farm:test:kept", 1.5)
    assert lease.acquire()
    beat = lease.keep_alive("test-lease")
    try:
        time.sleep(4)  # over twice the TTL: held only because it was renewed
        assert store.db.r.get("farm:test:kept") == lease.token and not beat.lost.is_set()
        store.db.r.set("farm:test:kept", "someone else")
        wait_for(beat.lost.is_set, 5, what="the renewer to see the lease taken")
    finally:
        beat.stop()


def test_redis_errors_reach_callers_as_the_farms_own():
    gone = Store(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(RedisUnreachable) as e:
        Lease(gone.db, "farm:test:lease", 30).acquire()
    assert "cannot reach Redis at redis://127.0.0.1:" in str(e.value)
