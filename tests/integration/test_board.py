"""The farm board (`python -m dashboard`) over HTTP and in headless Chromium (Debian's
`chromium`, driven by Playwright), with Debian's darknet training micro runs that
diverge and restart: the login (form and session cookie, basic auth, a URL with
credentials, the scrape token), bad requests, a run with three restarts drawn readably,
a failed run's reason, and a sweep's trials overlaid.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from farm.runs.model import Run, RunState
from farm.store import Store
from tests.conftest import free_port, wait_for
from tests.integration.test_eval import farm_cli, start_eval_worker
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "board-s3cret"


def http(url: str, password: str | None = PASSWORD, headers: dict | None = None
         ) -> tuple[int, object, bytes]:
    headers = dict(headers or {})
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"farm:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as r:
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


def logged_in(chromium, base: str):
    """A browser context that logged in through the form."""
    context = chromium.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.goto(base + "/")
    page.fill("#password", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#runs")
    return context, page


def train_at_008(capsys, data, cfg, *policy: str) -> str:
    """`farm train` at learning rate 0.08 with no burn-in: the micro net explodes within a
    few iterations."""
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg), "--set",
                              "learning_rate=0.08", "--set", "burn_in=0",
                              *(arg for p in policy for arg in ("--policy", p)))
    assert code == 0, err
    return out.strip()


def save_run(store: Store, run_id: str, **kw) -> Run:
    run = Run(id=run_id, data="/d/obj.data", cfg="/d/micro.cfg", weights=None, base_dir="/d",
              overrides={}, policy={}, host="testhost", created_at=time.time(),
              max_batches=100, **kw)
    store.runs.save(run)
    return run


# ---------------------------------------------------------------------------------------
# HTTP


def test_everything_refuses_requests_without_the_login(farm, board):
    for path in ("/", "/runs/nope", "/api/runs", "/api/runs/nope", "/api/runs/nope/chart",
                 "/api/runs/nope/log", "/runs/nope/chart.svg", "/sweeps", "/sweeps/nope",
                 "/api/sweeps", "/api/sweeps/nope", "/metrics", "/static/board.js",
                 "/no/such/page"):
        for password in (None, "wrong"):
            status, headers, body = http(board + path, password)
            assert status == 401, (path, password)
            assert headers.get("WWW-Authenticate") == 'Basic realm="farm"'
            assert f"the password in {farm.settings.data_dir}/flower.password" in body.decode()
    # a browser asking for a page gets the form, not a dialog; the path is escaped
    status, headers, body = http(board + "/runs/x?y=1", None, {"Accept": "text/html"})
    page = body.decode()
    assert status == 401 and headers.get("WWW-Authenticate") is None
    assert '<form id="login" method="post" action="/login">' in page
    assert f'<code id="password-path">{farm.settings.data_dir}/flower.password</code>' in page
    assert 'name="next" value="/runs/x?y=1"' in page
    assert http(board + "/api/runs")[0] == 200


def test_bad_queries_are_400_and_unknown_runs_and_sweeps_404_on_every_route(farm, board):
    store = Store(farm.settings.effective_redis_url)
    save_run(store, "r-known")
    for path, words in (("/api/runs/r-known/log?lines=abc", "?lines='abc' is not a whole number"),
                        ("/api/runs/r-known/log?lines=0", "?lines=0 is out of range"),
                        ("/api/runs/r-known/metrics?after=abc", "?after='abc' is not a stream id"),
                        ("/api/runs/r-known/metrics?count=x", "?count='x' is not a whole number"),
                        ("/api/sweeps?limit=-1", "?limit=-1 is out of range"),
                        ("/api/sweeps/any?page=zero", "?page='zero' is not a whole number")):
        status, _, body = http(board + path)
        assert status == 400, path
        assert words in json.loads(body)["error"], path
    for path in ("/api/runs/nope", "/api/runs/nope/chart", "/api/runs/nope/log",
                 "/api/runs/nope/metrics", "/api/sweeps/nope"):
        status, _, body = http(board + path)
        assert status == 404, path
        assert "no run 'nope'" in json.loads(body)["error"] or \
            "no sweep 'nope'" in json.loads(body)["error"], path
    for path in ("/runs/nope", "/runs/nope/chart.svg", "/sweeps/nope", "/no/such/page"):
        status, _, body = http(board + path)
        assert status == 404 and (b"nope" in body or b"no/such" in body), path
    status, _, body = http(board + "/runs/nope", headers={"Accept": "text/html"})
    assert status == 404 and '<p id="error-message">no run &#x27;nope&#x27;</p>' in body.decode()
    assert http(board + "/api/runs/r-known/log?lines=5")[0] == 200
    assert json.loads(http(board + "/api/runs/r-known/metrics?after=0-0")[2])["entries"] == []


def test_the_scrape_token_opens_metrics_and_nothing_else(farm, board):
    from workers.app import app
    token_file = Path(farm.settings.data_dir) / "metrics.token"
    token = token_file.read_text().strip()
    assert token and token != PASSWORD and oct(token_file.stat().st_mode & 0o777) == "0o600"
    farm.worker("gpu1", "gpu")
    store = Store(farm.settings.effective_redis_url)
    save_run(store, "r-m", state=RunState.RUNNING)
    store.db.r.hset("farm:run:r-m:live", mapping={"iteration": 42, "avg_loss": "1.5",
                                               "updated_at": time.time()})
    app.send_task("farm.nothing", queue="augment")  # no worker consumes augment: it waits
    bearer = {"Authorization": f"Bearer {token}"}
    status, headers, body = http(board + "/metrics", None, bearer)
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for line in ('farm_runs{state="running"} 1', 'farm_run_iteration{run="r-m",host="testhost"} 42',
                 'farm_run_avg_loss{run="r-m",host="testhost"} 1.5',
                 'farm_workers_up{queue="gpu"} 1', 'farm_workers_up{queue="augment"} 0',
                 'farm_queue_depth{queue="augment"} 1', 'farm_queue_depth{queue="gpu"} 0'):
        assert line in text, line
    for family in ("farm_run_iterations_per_second", "farm_run_restarts", "farm_restarts",
                   "farm_run_best_map", "farm_sweep_trials", "farm_data_dir_free_bytes"):
        assert f"# TYPE {family} gauge" in text, family
    free = float(next(x for x in text.splitlines()
                      if x.startswith("farm_data_dir_free_bytes ")).split()[1])
    assert free > 0
    assert http(board + "/metrics", None, {"Authorization": "Bearer wrong"})[0] == 401
    for path in ("/api/runs", "/", "/api/runs/r-m"):
        assert http(board + path, None, bearer)[0] == 401, path


# ---------------------------------------------------------------------------------------
# Chromium


def test_the_login_form_starts_a_session_a_browser_keeps(farm, board, chromium):
    context = chromium.new_context()
    page = context.new_page()
    response = page.goto(board + "/sweeps")
    assert response.status == 401 and page.is_visible("#login")
    assert page.inner_text("#password-path") == f"{farm.settings.data_dir}/flower.password"
    page.fill("#password", "wrong")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error:has-text('wrong password')")
    page.fill("#password", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_url(board + "/sweeps")  # back where the person was going
    [cookie] = [c for c in context.cookies() if c["name"] == "farm_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert cookie["expires"] > time.time() + 6 * 86400
    page.goto(board + "/")  # the cookie is the login now: the page's requests go through
    page.wait_for_function("document.querySelector('#summary').textContent.includes('runs')")
    assert page.evaluate("fetch('/api/runs').then(r => r.status)") == 200
    page.click("header form button")  # log out
    page.wait_for_selector("#login")
    assert not [c for c in context.cookies() if c["name"] == "farm_session"]
    assert page.evaluate("fetch('/api/runs').then(r => r.status)") == 401
    context.close()


def test_a_url_with_credentials_opens_the_board(farm, board, chromium):
    store = Store(farm.settings.effective_redis_url)
    save_run(store, "r-url")
    context = chromium.new_context()
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    port = board.rsplit(":", 1)[1]
    page.goto(f"http://farm:{PASSWORD}@127.0.0.1:{port}/")
    page.wait_for_selector('#runs tr[data-run="r-url"]')
    assert page.inner_text("#summary") == "1 runs, 0 running"
    assert "@" not in page.evaluate("document.URL") and not [e for e in errors if "credential" in e]
    wrong = chromium.new_context().new_page()
    wrong.goto(f"http://farm:nope@127.0.0.1:{port}/")
    wrong.wait_for_selector("#login-error:has-text('the password in the address is wrong')")
    context.close()


def test_a_child_farm_up_gave_up_on_is_a_banner_until_the_farm_comes_up_again(
        farm, board, chromium):
    """The events as `farm up`'s supervisor records them (tests/integration/
    test_farm_heals.py drives a real crash loop): the board and /metrics read them."""
    store = Store(farm.settings.effective_redis_url)
    t = time.time() - 60

    def event(dt, child, what, message):
        return {"at": t + dt, "child": child, "event": what, "pid": 10, "code": -9,
                "message": message}
    store.events.record([event(0, "farm", "up", "farm up on vm"),
                         event(1, "worker-gpu", "died", "worker-gpu (pid 10) killed by SIGKILL"),
                         event(2, "worker-gpu", "restarted", "worker-gpu restarted (pid 11)"),
                         event(3, "beat", "died", "beat (pid 12) exited with 1"),
                         event(4, "beat", "gave_up", "beat (pid 13) exited with 1: 3 deaths "
                               "within 60 s is a crash loop; not restarting it. Its log, "
                               "beat.log, ends:\n  | ImportError: no module named x")])
    context, page = logged_in(chromium, board)
    page.wait_for_selector("#given-up .banner")
    banner = page.inner_text("#given-up")
    assert "beat is down" in banner and "crash loop" in banner and "ImportError" in banner
    assert "worker-gpu" not in banner  # it came back
    assert page.is_visible("#farm-events")
    assert "2 death(s)" in page.inner_text("#farm-note")
    assert [r.split("\t")[1:3] for r in page.locator("#events tr.event").all_inner_texts()] == \
        [["beat", "gave_up"], ["beat", "died"], ["worker-gpu", "restarted"],
         ["worker-gpu", "died"], ["farm", "up"]]
    token = (Path(farm.settings.data_dir) / "metrics.token").read_text().strip()
    metrics = http(board + "/metrics", None, {"Authorization": f"Bearer {token}"})[2].decode()
    assert 'farm_up_children_given_up{child="beat"} 1' in metrics
    assert "farm_up_child_deaths 2" in metrics
    # the next `farm up` starts every child again: the banner goes
    store.events.record([event(5, "farm", "down", "farm down"),
                         event(6, "farm", "up", "farm up on vm")])
    page.wait_for_function("document.querySelector('#given-up').children.length === 0",
                           timeout=15000)
    assert "0 death(s)" in page.inner_text("#farm-note")
    metrics = http(board + "/metrics", None, {"Authorization": f"Bearer {token}"})[2].decode()
    assert "farm_up_children_given_up{" not in metrics and "farm_up_child_deaths 0" in metrics
    context.close()


def test_a_run_with_three_restarts_is_drawn_readably(farm, board, chromium, tmp_path, capsys,
                                                     darknet_bin):
    """lr 0.08, 0.04 and 0.02 explode within ~40 iterations of the micro net (burn in 0);
    each restart halves the rate; 0.01 trains (now and then it explodes too, warming up
    again after its restart: then 0.005 trains, a fifth attempt). Four attempts or more,
    a colour each, and the last one's curve spans most of the plot, whatever the others
    reached."""
    from workers.tasks.enqueue import enqueue_eval
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=400)
    farm.worker("gpu1")
    start_eval_worker(farm)
    run_id = train_at_008(capsys, data, cfg, "burn_in_min=0", "max_divergence_restarts=5")
    store = Store(farm.settings.effective_redis_url)
    wait_for(lambda: len(store.runs.load(run_id).attempts) >= 4, 120, 0.2,
             what="three restarts after divergence")
    context, page = logged_in(chromium, board)
    page.goto(f"{board}/runs/{run_id}")
    page.wait_for_function("document.querySelector('#chart svg')"
                           " && Number(document.querySelector('#chart svg').dataset.attempts) >= 4",
                           timeout=30000)
    attempts = page.locator("#attempts tr.attempt").all_inner_texts()
    assert "diverged" in attempts[0] and "learning_rate 0.04 → 0.02" in attempts[2]
    # live: the chart changes while the fourth attempt trains
    first = int(page.get_attribute("#chart svg", "data-n"))
    assert store.runs.load(run_id).state is RunState.RUNNING, "the run ended too soon to watch"
    page.wait_for_function(f"Number(document.querySelector('#chart svg').dataset.n) > {first + 20}",
                           timeout=30000)
    # a checkpoint evaluated on the eval worker shows its mAP in the table and the chart
    checkpoint = wait_for(lambda: next((c for c in store.runs.load(run_id).checkpoints
                                        if c.finite), None), 60, 0.2, what="a checkpoint")
    enqueue_eval(run_id, checkpoint.path, checkpoint.iteration)
    wait_for(lambda: store.runs.load(run_id).state.finished, 120, 0.5, what="the run's end")
    page.wait_for_function("Number(document.querySelector('#chart svg').dataset.maps) >= 1",
                           timeout=60000)
    assert "opencv-dnn" in page.locator("#checkpoints tr.checkpoint").first.inner_text()
    run = store.runs.load(run_id)
    assert run.state is RunState.COMPLETED, run.message
    # "…" only for a checkpoint whose evaluation was sent; one off the cadence says "-"
    wait_for(lambda: not store.evaluations.pending(run_id), 60, 0.2, what="the evaluations")
    evaluated = {e.iteration for e in store.evaluations.all(run_id)}
    page.reload()
    page.wait_for_function(f"document.querySelectorAll('#checkpoints tr.checkpoint').length"
                           f" === {len(run.checkpoints)}", timeout=30000)
    maps = [r.split("\t")[3].strip() for r in
            page.locator("#checkpoints tr.checkpoint").all_inner_texts()]
    assert [m != "-" for m in maps] == [c.iteration in evaluated for c in run.checkpoints]
    assert "…" not in maps and "-" in maps, maps
    page.wait_for_selector("#chart svg")
    page.wait_for_function("document.querySelector('#chart svg').dataset.n === "
                           f"'{store.db.r.xlen(f'farm:run:{run_id}:metrics')}'", timeout=30000)

    # the model's decisions
    chart = json.loads(http(f"{board}/api/runs/{run_id}/chart")[2])["chart"]
    colours = [a["colour"] for a in chart["attempts"]]
    n = len(run.attempts)
    assert [a["number"] for a in chart["attempts"]] == list(range(1, n + 1)) and n >= 4
    assert len(set(colours)) == n
    assert [a["outcome"] for a in chart["attempts"]] == ["diverged"] * (n - 1) + ["completed"]
    # each diverged attempt is marked on the top edge: nan/inf, or its explosion off scale
    assert all(a["nonfinite"] + a["above"] >= 1 for a in chart["attempts"][:-1]), chart
    assert chart["attempts"][-1]["height_share"] > 0.6
    assert chart["x_hi"] == 400 and chart["rate"]["hi"] > 0.08 > 0.01 > chart["rate"]["lo"]
    # ... and the page: four colours drawn, the good curve tall in the plot
    drawn = page.evaluate("""() => {
        const svg = document.querySelector('#chart svg');
        const plot = svg.querySelector('.plot-main rect').getBBox();
        const out = {};
        for (const g of svg.querySelectorAll('g.attempt')) {
            const lines = [...g.querySelectorAll('polyline')].map(p => p.getBBox());
            const top = Math.min(...lines.map(b => b.y));
            const bottom = Math.max(...lines.map(b => b.y + b.height));
            out[g.dataset.attempt] = {colour: g.dataset.colour,
                                      share: (bottom - top) / plot.height};
        }
        return out;
    }""")
    assert sorted(drawn, key=int) == [str(k) for k in range(1, n + 1)]
    assert [drawn[str(k)]["colour"] for k in range(1, n + 1)] == colours
    assert drawn[str(n)]["share"] > 0.6
    page.screenshot(path=str(tmp_path / "restarts.png"), full_page=True)
    facts = page.inner_text("#facts")
    assert "best mAP" in facts and "best.weights" in facts
    assert page.get_attribute("#flower-link", "href") == \
        f"http://127.0.0.1:{farm.settings.flower_port}/task/{run.task_id}"
    assert "avg" in page.inner_text("#log")
    svg = http(f"{board}/runs/{run_id}/chart.svg")
    assert svg[0] == 200 and svg[1]["Content-Type"] == "image/svg+xml"
    metrics = http(board + "/metrics")[2].decode()
    assert f'farm_run_restarts{{run="{run_id}",host="testhost",outcome="diverged"}} {n - 1}' \
        in metrics
    context.close()


def test_a_failed_runs_reason_is_on_the_board(farm, board, chromium, tmp_path, capsys,
                                              darknet_bin):
    data = micro_dataset(tmp_path / "ds", images=16)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    farm.worker("gpu1")
    run_id = train_at_008(capsys, data, cfg, "max_divergence_restarts=0")
    store = Store(farm.settings.effective_redis_url)
    run = wait_for(lambda: (r := store.runs.load(run_id)).state.finished and r, 90, 0.2,
                   what="the run to fail")
    assert run.state is RunState.FAILED and run.message
    code, out, _ = farm_cli(capsys, "status", run_id)  # the CLI tells the same end
    assert code == 0 and run.message in out
    assert "evaluations: none (it ended without a finite checkpoint to evaluate)" in out
    context, page = logged_in(chromium, board)
    page.wait_for_selector(f'#runs tr[data-run="{run_id}"]')
    row = page.inner_text(f'#runs tr[data-run="{run_id}"]')
    assert "failed" in row and run.message[:40] in row
    page.goto(f"{board}/runs/{run_id}")
    page.wait_for_selector("#chart svg")
    assert page.inner_text("#message") == run.message
    drawn = page.text_content("#chart svg")
    assert "failed" in drawn and run.message[:40] in drawn
    context.close()


def test_the_sweep_page_overlays_its_trials_beside_the_leaderboard(farm, board, chromium,
                                                                   tmp_path, capsys,
                                                                   darknet_bin):
    micro_dataset(tmp_path / "ds", images=16)
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    (tmp_path / "sweep.yaml").write_text(
        "name: lr-board\nbase: {data: ds/obj.data, cfg: micro.cfg}\n"
        "parameters: {learning_rate: [0.004, 0.001, 0.04]}\nconcurrency: 1\n"
        "budget: {iterations: 60}\nobjective: min_avg_loss\npolicy: {burn_in_min: 0}\n")
    farm.worker("gpu1")
    code, out, err = farm_cli(capsys, "sweep", "submit", str(tmp_path / "sweep.yaml"))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    wait_for(lambda: store.sweeps.load(sweep_id).state.value == "done", 180, 0.5,
             what="the sweep's end")
    context, page = logged_in(chromium, board)
    page.goto(f"{board}/sweeps")
    page.click(f'a[href="/sweeps/{sweep_id}"]')
    page.wait_for_selector("#overlay svg g.trial")
    page.wait_for_function("document.querySelectorAll('#leaderboard tr.trial-row').length === 3")
    groups = page.evaluate("""() => [...document.querySelectorAll(
            '#overlay svg g.trial:not(.legend-entry)')]
        .map(g => ({trial: g.dataset.trial, colour: g.dataset.colour,
                    title: g.querySelector('title').textContent,
                    lines: g.querySelectorAll('polyline').length}))""")
    assert sorted(g["trial"] for g in groups) == ["0", "1", "2"]
    assert len({g["colour"] for g in groups}) == 3 and all(g["lines"] >= 1 for g in groups)
    by_trial = {g["trial"]: g for g in groups}
    assert "learning_rate=0.004" in by_trial["0"]["title"]
    # the diverged trial names what it really trained with
    trials = {t.index: t for t in store.sweeps.trials(sweep_id)}
    really = f"{store.runs.load(trials[2].run_id).attempts[-1].rate_value:.6g}"
    assert float(really) < 0.04
    assert f"trained with: learning_rate 0.04 -> {really}" in by_trial["2"]["title"]
    legend = page.text_content('#overlay svg g.legend-entry[data-trial="2"] text')
    assert legend == f"#2 learning_rate=0.04→{really}"
    assert f"→ {really}" in page.inner_text('#leaderboard tr[data-trial="2"]')
    swatch = page.evaluate("getComputedStyle(document.querySelector("
                           "'#leaderboard tr[data-trial=\"0\"] .swatch')).backgroundColor")
    r, g, b = (int(by_trial["0"]["colour"][k:k + 2], 16) for k in (1, 3, 5))
    assert swatch == f"rgb({r}, {g}, {b})"
    page.hover('#leaderboard tr[data-trial="1"]')
    assert page.get_attribute('#overlay svg g.trial[data-trial="1"]:not(.legend-entry)',
                              "class") == "trial hot"
    page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
    # a page of the leaderboard
    data = json.loads(http(f"{board}/api/sweeps/{sweep_id}?per=2")[2])
    assert data["total"] == 3 and data["pages"] == 2 and len(data["rows"]) == 2
    assert data["counts"] == {"completed": 3}
    context.close()
