"""The reaper (beat's `farm.reap`) against a real Redis and real workers: it finds every
running run however old, sees at once a holder that died on this machine, and leaves a
live holder, or one on another machine whose lease has not expired, alone."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

from farm.procs import Pid
from farm.runs.model import Outcome, RunState, new_run_id
from farm.runs.reaper import lost_runs
from farm.runs.service import submit_run
from farm.store import Store
from tests.conftest import REPO, wait_for
from workers.micro import micro_cfg, micro_dataset


def _store(farm) -> Store:
    return Store(farm.settings.effective_redis_url)


def test_a_running_run_older_than_the_newest_thousand_is_reaped_and_completes(farm, tmp_path,
                                                                            darknet_bin):
    store = _store(farm)
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=150)
    old = submit_run(store, farm.settings, data=str(data), cfg=str(cfg))
    # a run that was training a day ago when its worker vanished (no lease any more)
    old.created_at, old.state, old.worker = time.time() - 86400, RunState.RUNNING, "gpu9@gone:4242"
    store.runs.save(old)
    assert store.runs.running_leases() == {old.id: None}
    newer = dataclasses.replace(old, state=RunState.COMPLETED, worker=None)
    for n in range(1000):
        store.runs.save(dataclasses.replace(newer, id=new_run_id() + f"{n:04d}",
                                           created_at=time.time() + n))
    assert old.id not in store.runs.ids(1000)
    assert list(store.runs.running_leases()) == [old.id]  # completed runs are not in the set
    # Redis data from before the running set existed: the reaper rebuilds it once
    store.db.r.delete("farm:runs:running", "farm:runs:running:indexed")
    assert list(store.runs.running_leases()) == [old.id]

    farm.worker("gpu1")
    farm.worker("cpu1", "cpu")  # runs beat's reaper
    farm.beat()
    run = wait_for(lambda: (r := store.runs.load(old.id)).state is RunState.COMPLETED and r,
                   120, 0.2, what=f"the old run {old.id} to be resubmitted and complete")
    assert "gpu1@testhost" in run.worker and run.attempts[-1].outcome is Outcome.COMPLETED
    # by beat's reaper or a worker's own (workers/reaping.py): whichever passed first
    assert any(f"run {old.id}: the lease of worker gpu9@gone:4242 expired; resubmitted"
               in farm.log(w) for w in ("cpu1", "gpu1"))
    assert store.runs.running_leases() == {}


def test_a_lease_names_its_process_and_a_dead_holder_here_is_seen_at_once(farm):
    """No waiting for the lease to expire when its holder is known dead (its pid is gone
    on this machine); a holder alive, or on another machine, keeps the run."""
    store = _store(farm)
    ids = [new_run_id() + s for s in ("dead", "live", "away")]
    code = ("import sys\nfrom farm.store import Store\n"
            f"lease = Store({farm.settings.effective_redis_url!r}).runs.lease(sys.argv[1], "
            "'gpu0@testhost', 3600)\nassert lease.acquire()\nprint(lease.token)\n")
    holder = subprocess.run([sys.executable, "-c", code, ids[0]], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    assert json.loads(holder)["worker"] == "gpu0@testhost"
    assert store.runs.lease(ids[1], "gpu0@testhost", 3600).acquire()  # this process: alive
    away = json.dumps({"worker": "gpu0@lily2", **Pid(1, 1, "other-boot/pid:[1]").to_dict(),
                       "nonce": "x"})
    store.db.r.set(f"farm:run:{ids[2]}:lease", away, px=3_600_000)
    store.db.r.sadd("farm:runs:running", ids[2])
    assert lost_runs(store) == [(ids[0], holder)]
