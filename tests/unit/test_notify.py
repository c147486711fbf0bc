"""farm.notify: the events' payloads, the POST against a real local HTTP server, and the
webhook URL kept out of messages."""
from __future__ import annotations

import base64

import pytest

from farm import notify
from farm.errors import ConfigError, DeliveryFailed
from farm.settings import Settings
from farm.urls import mask_url
from tests.unit.test_report import T0, restarted_run, row
from tests.webhook import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_the_webhook_url_is_masked_in_every_message():
    assert mask_url("https://farm:s3cret@hooks.example.com:8443/T0/B0/XyZ?token=t") \
        == "https://***@hooks.example.com:8443/…"
    assert mask_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert mask_url("http://[::1]:9000/x") == "http://[::1]:9000/…"
    with pytest.raises(ConfigError) as e:
        Settings(notify_url="ftp://u:s3cret@example.com/x").validate()
    assert "s3cret" not in str(e.value) and "ftp://***@example.com/…" in str(e.value)
    with pytest.raises(ConfigError):
        Settings(notify_url="http://host:port/x").validate()
    Settings(notify_url="https://hooks.example.com/x").validate()


def test_retries_wait_twice_as_long_each_time_up_to_the_cap():
    assert [notify.backoff(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_each_event_has_an_id_made_of_what_happened():
    run = restarted_run()
    run.state, run.message, run.ended_at = run.state.FAILED, "gave up after 3 attempts", T0 + 9
    p = notify.run_failed(run).payload("lily2")
    assert p["id"] == "run.failed:r1" and p["event"] == "run.failed" and p["farm"] == "lily2"
    assert p["run"]["outcomes"] == ["diverged", "diverged", None]
    assert p["run"]["sweep"] == "s1" and p["run"]["trial"] == 2 and p["run"]["attempts"] == 3
    assert p["text"] == "run r1 (sweep s1#2) failed: gave up after 3 attempts"
    assert p["at"] == "2023-11-14T22:13:29Z"

    from farm.sweeps.model import Sweep, SweepState
    from farm.sweeps.spec import SweepSpec
    sweep = Sweep(id="s1", spec={}, created_at=T0, host="head", name="night",
                  state=SweepState.DONE, ended_at=T0 + 3600, message="2 completed")
    spec = SweepSpec(path="/s.yaml", data="/d", cfg="/c", weights=None, fixed={},
                     parameters=(), search="grid", trials=2)
    p = notify.sweep_ended(sweep, spec, [row(trial=1, state="completed", best=0.9),
                                         row(trial=0, state="failed", rank=None, best=None)]
                           ).payload("head")
    assert p["id"] == "sweep.ended:s1" and p["sweep"]["counts"] == {"completed": 1, "failed": 1}
    assert p["sweep"]["best"]["trial"] == 1 and p["sweep"]["wall_seconds"] == 3600
    assert p["sweep"]["report"] == "farm sweep report s1 -o report.html"

    away = notify.host_away("lily2", "lily2 did not answer SSH within 10s", T0, {"task": "x"})
    assert away.id == f"host.away:lily2:{int(T0)}" and away.data["host"]["name"] == "lily2"


def test_a_post_is_json_with_its_id_and_basic_auth_from_the_url(receiver):
    url = receiver.url.replace("http://", "http://farm:p%40ss@") + "?k=1"
    assert notify.post(url, {"id": "run.failed:r1", "x": "é"}, 5) == 200
    got = receiver.requests[0]
    assert got["path"] == "/hook?k=1" and got["body"] == {"id": "run.failed:r1", "x": "é"}
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Idempotency-Key"] == "run.failed:r1"
    assert base64.b64decode(got["headers"]["Authorization"].split()[1]) == b"farm:p@ss"


def test_a_refused_post_says_why_without_the_password(receiver):
    receiver.answers = [500, 302]
    url = receiver.url.replace("http://", "http://farm:s3cret@")
    with pytest.raises(DeliveryFailed, match=r"answered HTTP 500") as e:
        notify.post(url, {"id": "a"}, 5)
    assert "s3cret" not in str(e.value) and "http://***@127.0.0.1" in str(e.value)
    with pytest.raises(DeliveryFailed, match="HTTP 302"):  # a redirect is not followed
        notify.post(url, {"id": "a"}, 5)
    assert len(receiver.requests) == 2
    receiver.close()
    with pytest.raises(DeliveryFailed, match="refused"):
        notify.post(url, {"id": "a"}, 5)
