"""The farm board in headless Chromium (Debian's `chromium`, driven by Playwright), while
Debian's darknet trains a micro run that diverges and is restarted: the run, its live
chart and its attempt lineage are shown, the chart changes as the run trains, checkpoints
show their mAP; without the login everything answers 401, API and metrics included.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from farm.micro import micro_cfg, micro_dataset
from farm.state import Store
from tests.conftest import free_port, wait_for
from tests.integration.test_eval import farm_cli, start_eval_worker

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "board-s3cret"


def http(url: str, password: str | None = PASSWORD) -> tuple[int, object, bytes]:
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"farm:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture
def board(farm):
    """`python -m dashboard` with the farm's settings, behind a login written as `farm up`
    writes Flower's."""
    data_dir = Path(farm.settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = data_dir / "flower.password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    port = free_port()
    farm.settings = farm.settings.replace(board_port=port, flower_address="127.0.0.1")
    farm._spawn("board", [sys.executable, "-m", "dashboard"])
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return http(base + "/api/runs", None)[0] == 401
        except OSError:
            return False
    wait_for(up, 30, 0.2, what=f"the board (log: {farm.tmp / 'board.log'})")
    return base


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_everything_refuses_requests_without_the_login(farm, board):
    for path in ("/", "/runs/nope", "/api/runs", "/api/runs/nope", "/api/runs/nope/chart",
                 "/api/runs/nope/log", "/metrics", "/static/board.js"):
        for password in (None, "wrong"):
            status, headers, _ = http(board + path, password)
            assert status == 401, (path, password)
            assert headers.get("WWW-Authenticate") == 'Basic realm="farm"'
    assert http(board + "/api/runs")[0] == 200
    status, _, body = http(board + "/api/runs/nope")
    assert status == 404 and "no run 'nope'" in json.loads(body)["error"]


def test_the_board_shows_a_training_run_its_lineage_and_a_live_chart(farm, board, chromium,
                                                                     tmp_path, capsys,
                                                                     darknet_bin):
    from workers.tasks.eval import enqueue_eval
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    farm.worker("gpu1")
    start_eval_worker(farm)
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg), "--set",
                              "learning_rate=0.05", "--set", "burn_in=0", "--policy",
                              "burn_in_min=0")
    assert code == 0, err
    run_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    # the lineage first: lr 0.05 diverges on the micro net and the run restarts by itself
    wait_for(lambda: len(store.load_run(run_id).attempts) >= 2, 60, 0.2,
             what="a restart after divergence")

    context = chromium.new_context(http_credentials={"username": "farm",
                                                     "password": PASSWORD})
    page = context.new_page()
    page.goto(board + "/")
    page.wait_for_selector(f'#runs tr[data-run="{run_id}"]', timeout=15000)
    row = page.inner_text(f'#runs tr[data-run="{run_id}"]')
    assert "running" in row and "testhost" in row
    page.click(f'a[href="/runs/{run_id}"]')
    page.wait_for_selector("#attempts tr.attempt >> nth=1", timeout=15000)
    attempts = page.locator("#attempts tr.attempt").all_inner_texts()
    assert "first attempt" in attempts[0] and "diverged" in attempts[0]
    assert "diverged at iteration" in attempts[1] and "learning_rate 0.05 → 0.025" in attempts[1]

    # the chart is drawn, and changes while the run trains
    page.wait_for_function("Number(document.querySelector('#chart').dataset.n) > 0",
                           timeout=15000)
    first = chart_state(page)
    assert store.load_run(run_id).state.value == "running", "the run ended too soon to watch"
    assert first["attempts"] >= 2  # the restart is on the chart
    page.wait_for_function(f"Number(document.querySelector('#chart').dataset.lastIteration)"
                           f" > {first['last'] + 20}", timeout=20000)
    later = chart_state(page)
    assert later["pixels"] != first["pixels"] and later["n"] > first["n"]

    # a checkpoint evaluated on the eval worker shows its mAP in the table and the chart
    checkpoint = wait_for(lambda: next((c for c in store.load_run(run_id).checkpoints
                                        if c.finite), None), 60, 0.2, what="a checkpoint")
    enqueue_eval(run_id, checkpoint.path, checkpoint.iteration)
    page.wait_for_function("Number(document.querySelector('#chart').dataset.maps) >= 1",
                           timeout=30000)
    cells = page.locator("#checkpoints tr.checkpoint").first.inner_text()
    assert "%" in cells and "opencv-dnn" in cells

    facts = page.inner_text("#facts")
    assert "best mAP" in facts and "best.weights" in facts
    run = store.load_run(run_id)
    assert page.get_attribute("#flower-link", "href") == \
        f"http://127.0.0.1:{farm.settings.flower_port}/task/{run.task_id}"
    assert "avg" in page.inner_text("#log")  # darknet's iteration lines in the tail

    # the same data as JSON, and Prometheus metrics, with the login
    detail = json.loads(http(f"{board}/api/runs/{run_id}")[2])
    assert len(detail["attempts"]) >= 2 and detail["attempts"][1]["changes"]
    metrics = json.loads(http(f"{board}/api/runs/{run_id}/metrics?after=0-0&count=5")[2])
    assert [e["iteration"] for e in metrics["entries"]][:1] == [1] and metrics["last"]
    status, headers, text = http(board + "/metrics")
    text = text.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'farm_runs{state="running"} 1' in text
    assert f'farm_run_iterations_per_second{{run="{run_id}",host="testhost"}}' in text
    assert f'farm_run_last_map{{run="{run_id}"' in text
    page.screenshot(path=str(tmp_path / "board.png"))
    context.close()

    code, out, err = farm_cli(capsys, "cancel", run_id)
    assert code == 0, err


def chart_state(page) -> dict:
    return page.evaluate("""() => {
        const c = document.querySelector('#chart');
        return {n: Number(c.dataset.n), last: Number(c.dataset.lastIteration),
                attempts: Number(c.dataset.attempts), pixels: c.toDataURL()};
    }""")


def test_the_board_will_not_start_without_its_login_file(tmp_path):
    from dashboard.board import read_password
    from farm.errors import FarmUnavailable
    with pytest.raises(FarmUnavailable, match="flower.password does not exist") as e:
        read_password(str(tmp_path / "nowhere"))
    assert "farm up" in e.value.hint


def test_the_board_shows_sweeps_and_their_leaderboards(farm, board, tmp_path):
    from farm.sweeps.service import submit_sweep
    from farm.sweeps.spec import parse_spec
    micro_dataset(tmp_path / "ds", images=8)
    micro_cfg(tmp_path / "micro.cfg", max_batches=100)
    spec = parse_spec("name: lr-board\nbase: {data: ds/obj.data, cfg: micro.cfg}\n"
                      "parameters: {learning_rate: [0.001, 0.002]}\n",
                      str(tmp_path / "sweep.yaml"))
    sw = submit_sweep(Store(farm.settings.effective_redis_url), farm.settings, spec,
                      gpu_workers=1)
    assert http(board + "/sweeps", None)[0] == 401
    assert http(board + "/api/sweeps", "wrong")[0] == 401
    status, _, body = http(board + "/api/sweeps")
    [entry] = json.loads(body)
    assert status == 200 and entry["sweep"]["id"] == sw.id
    assert [r["params"]["learning_rate"] for r in entry["leaderboard"]] == ["0.001", "0.002"]
    status, _, page = http(board + "/sweeps")
    text = page.decode()
    assert status == 200 and "lr-board" in text and sw.id in text
    assert "learning_rate=0.002" in text
