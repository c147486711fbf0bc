"""FARM_NOTIFY_URL end to end: real Celery workers post to a real local HTTP server
(http.server in a thread, tests/webhook.py); darknet is Debian's, on the micro network.

The sweep's end and a trial's failure are in test_report.py (one real sweep serves both
the report and its notifications).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from farm import notify
from farm.runs.model import RunState
from farm.runs.service import submit_run
from farm.store import Store
from tests.conftest import REPO, free_port, wait_for
from tests.webhook import BlackHole, Receiver
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


def notifying(farm, monkeypatch, url: str, **more) -> None:
    """Every process of the test's farm (and this one) posts to `url`."""
    farm.settings = farm.settings.replace(notify_url=url, notify_backoff=0.5, **more)
    for key, value in farm.settings.to_env().items():
        monkeypatch.setenv(key, value)
    from workers.app import app, configure
    configure(app, farm.settings)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def event(event_id: str) -> notify.Event:
    return notify.Event(id=event_id, kind="run.failed", at=time.time(), text=event_id,
                        data={"run": {"id": event_id.split(":")[1]}})


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try_and_only_once(
        farm, monkeypatch, receiver):
    receiver.answers = [500, 500]
    url = receiver.url.replace("http://", "http://farm:s3cret@")
    notifying(farm, monkeypatch, url)
    farm.worker("cpu1", "cpu")
    from workers.tasks.notify import deliver, emit
    ledger = Store(farm.settings.effective_redis_url).notices
    first = event("run.failed:r-first")
    emit(first)
    emit(first)  # seen again (a retried task, another worker): queued once
    wait_for(lambda: ledger.record(first.id).get("state") == "delivered", 60, 0.1,
             what=f"{first.id} delivered (log: {farm.tmp / 'cpu1.log'})")
    assert [r["answered"] for r in receiver.requests] == [500, 500, 200]
    assert {r["body"]["id"] for r in receiver.requests} == {first.id}
    assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {first.id}
    record = ledger.record(first.id)
    assert record["tries"] == "3" and record["status"] == "200" and record["error"] == ""

    # the message delivered again (a broker redelivery): it finds the event delivered
    deliver.apply_async(args=[first.payload("testhost")])
    barrier = event("run.failed:r-barrier")
    emit(barrier)
    wait_for(lambda: ledger.record(barrier.id).get("state") == "delivered", 60, 0.1,
             what="the next event delivered")
    assert len([r for r in receiver.requests if r["body"]["id"] == first.id]) == 3

    log = farm.log("cpu1")
    masked = f"http://***@127.0.0.1:{receiver.port}/…"
    assert f"notification {first.id} to {masked} failed (try 1): {masked} answered HTTP " \
           "500" in log
    assert "(try 2)" in log and f"notification {first.id} delivered to {masked}" in log
    assert "s3cret" not in log and receiver.url not in log


def test_a_receiver_that_never_answers_does_not_hold_up_training(farm, monkeypatch,
                                                                  tmp_path, darknet_bin):
    """The first run fails (its run.failed is queued); while that POST hangs on a
    receiver that accepts and never answers, the next run trains to its end."""
    hole = BlackHole()
    try:
        notifying(farm, monkeypatch, hole.url, notify_timeout=300.0)
        data = micro_dataset(tmp_path / "ds", images=16)
        cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=200)
        farm.worker("gpu1", "gpu")
        farm.worker("cpu1", "cpu")
        store = Store(farm.settings.effective_redis_url)

        def train(*args: str) -> tuple[int, str]:
            proc = subprocess.run([sys.executable, "-m", "workers.cli", "train", str(data),
                                   str(cfg), *args, "--wait"], cwd=str(REPO), env=farm.env,
                                  capture_output=True, text=True, timeout=300)
            return proc.returncode, proc.stdout.splitlines()[0].strip()

        code, failed = train("--set", "learning_rate=2", "--set", "burn_in=0",
                             "--policy", "max_divergence_restarts=0")
        assert code == 1 and store.runs.load(failed).state is RunState.FAILED
        sending = f"farm:notify:run.failed:{failed}:sending"
        wait_for(lambda: store.db.r.exists(sending), 60, 0.1,
                 what="the cpu worker to be posting the failure")
        code, done = train("--set", "learning_rate=0.004")
        assert code == 0
        run = store.runs.load(done)
        assert run.state is RunState.COMPLETED and run.last_iteration == 200
        # trained from start to end while the first POST was still waiting for an answer
        record = store.notices.record(f"run.failed:{failed}")
        assert record["state"] == "queued" and record["tries"] == "0"
        assert store.db.r.exists(sending)
        assert run.attempts[0].started_at > float(record["queued_at"])
    finally:
        hole.close()


def test_a_host_going_away_is_notified_once_while_its_run_waits_for_it(
        farm, monkeypatch, receiver, tmp_path):
    """lily2 is in the inventory, nothing answers at its address: the run waiting for its
    dataset retries every second and the receiver hears of the host once."""
    key = tmp_path / "farm_ed25519"
    key.write_text("not used: nothing answers\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"""\
hosts:
  lily2:
    address: 127.0.0.1
    ssh: {{user: farm, port: {free_port()}, key: {key}, known_hosts: {known}}}
    roles: [augment]
    data_dir: /srv/farm
""")
    notifying(farm, monkeypatch, receiver.url, inventory=str(inventory),
              host_retry_delay=1.0)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    farm.worker("gpu1", "gpu")
    farm.worker("cpu1", "cpu")
    store = Store(farm.settings.effective_redis_url)
    run = submit_run(store, farm.settings, data="/srv/farm/datasets/d1/obj.data",
                     cfg=str(cfg), origin="lily2", check=False)
    from workers.tasks.enqueue import enqueue_train
    enqueue_train(run.id)

    def retries() -> int:
        return len(re.findall(rf"run {run.id} waits for a host", farm.log("gpu1")))
    wait_for(lambda: receiver.events("host.away"), 60, 0.1, what="the host.away event")
    # more retries than Celery's default limit (3): a run waits for its host for ever
    wait_for(lambda: retries() >= 6, 60, 0.2, what="six retries of the run")
    away = receiver.events("host.away")
    assert len(away) == 1, away
    host = away[0]["host"]
    assert away[0]["id"].startswith("host.away:lily2:") and host["name"] == "lily2"
    assert "lily2 did not answer SSH" in host["error"]
    assert host["seen_by"]["task"] == "farm.train" and host["seen_by"]["run_id"] == run.id
    assert store.runs.load(run.id).state is RunState.QUEUED  # it waits, it did not fail
    store.runs.request_cancel(run.id)
    wait_for(lambda: store.runs.load(run.id).state is RunState.CANCELLED, 60, 0.2,
             what="the waiting run to be cancelled")


def test_a_notification_is_given_up_after_its_retries_with_a_log_line(farm, monkeypatch,
                                                                       receiver):
    receiver.answers = [503] * 5
    notifying(farm, monkeypatch, receiver.url, notify_retries=2)
    farm.worker("cpu1", "cpu")
    from workers.tasks.notify import emit
    ledger = Store(farm.settings.effective_redis_url).notices
    lost = event("run.failed:r-lost")
    emit(lost)
    wait_for(lambda: ledger.record(lost.id).get("state") == "gave_up", 60, 0.1,
             what=f"{lost.id} given up")
    assert [r["answered"] for r in receiver.requests] == [503, 503, 503]  # 1 + 2 retries
    record = ledger.record(lost.id)
    assert record["tries"] == "3" and "answered HTTP 503" in record["error"]
    assert f"notification {lost.id} to http://127.0.0.1:{receiver.port}/… given up after " \
           "3 tries" in farm.log("cpu1")


def test_a_cancelled_sweep_is_a_sweep_that_ended(farm, monkeypatch, receiver, tmp_path,
                                                  capsys):
    from tests.integration.test_sweep import cli
    notifying(farm, monkeypatch, receiver.url)
    micro_dataset(tmp_path / "ds", images=16)
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: {data: ds/obj.data, cfg: micro.cfg}\n"
                    "parameters: {learning_rate: [0.004, 0.002]}\n")
    farm.worker("cpu1", "cpu")  # no gpu worker: the first trial stays queued
    code, out, err = cli(capsys, "sweep", "submit", str(spec))
    assert code == 0, err
    sweep_id = out.strip()
    code, out, err = cli(capsys, "sweep", "cancel", sweep_id)
    assert code == 0, err
    wait_for(lambda: receiver.events("sweep.ended"), 60, 0.1, what="the sweep.ended POST")
    ended = receiver.events("sweep.ended")
    assert len(ended) == 1 and ended[0]["sweep"]["state"] == "cancelled"
    assert ended[0]["sweep"]["counts"] == {"cancelled": 2}
    code, out, err = cli(capsys, "sweep", "cancel", sweep_id)  # again: it was over
    assert code == 0 and "already cancelled" in out
