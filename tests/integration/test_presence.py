"""Workers say they are up (workers/presence.py) with real Celery workers and a real
Redis: the key is there before a worker can answer, names its queues, goes when the
worker stops, and asking the workers gives the broadcast's own answer, ended by the
count instead of the timeout."""
from __future__ import annotations

import os
import signal
import time

from farm.store import Store
from tests.conftest import wait_for
from workers.presence import active_queues

#: a timeout no answer here should wait for: a broadcast that waits it out is the bug
LONG = 30.0


def test_a_worker_is_present_with_its_queues_from_before_it_answers_until_it_stops(farm):
    store = Store(farm.settings.effective_redis_url)
    assert store.workers.present() == {}
    from workers.app import app
    start = time.monotonic()
    assert active_queues(app, store, LONG) == {}  # no worker: nobody is asked
    assert time.monotonic() - start < LONG / 3

    gpu = farm.worker("gpu1", "gpu,host.lily2")  # returns once it answered a ping
    assert store.workers.present() == {"gpu1@testhost": ["gpu", "host.lily2"]}
    farm.worker("cpu1", "cpu")
    start = time.monotonic()
    replies = active_queues(app, store, LONG)
    assert time.monotonic() - start < LONG / 3, "the broadcast waited out its timeout"
    assert {node: sorted(q["name"] for q in queues) for node, queues in replies.items()} == \
        {"gpu1@testhost": ["gpu", "host.lily2"], "cpu1@testhost": ["cpu"]}

    gpu.send_signal(signal.SIGTERM)  # a warm shutdown says goodbye
    gpu.wait(30)
    assert list(store.workers.present()) == ["cpu1@testhost"]


def test_a_worker_killed_outright_is_left_out_of_the_answer(farm):
    store = Store(farm.settings.effective_redis_url)
    gone = farm.worker("gpu1", "gpu", env={"FARM_WORKER_ANNOUNCE": "1"})
    farm.worker("cpu1", "cpu")
    os.killpg(gone.pid, signal.SIGKILL)  # no goodbye: its key stays until it expires
    gone.wait(10)
    assert "gpu1@testhost" in store.workers.present()
    from workers.app import app
    replies = active_queues(app, store, 2.0)  # one reply of two expected: the timeout ends it
    assert list(replies) == ["cpu1@testhost"]
    wait_for(lambda: "gpu1@testhost" not in store.workers.present(), 3 + 5, 0.2,
             what="the killed worker's key to expire (3 turns of 1 s)")
