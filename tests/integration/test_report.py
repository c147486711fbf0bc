"""The morning report of a real sweep, opened in headless Chromium from a file:// URL with
the network off; and the sweep's notifications, received by a real local HTTP server.

Real parts: redis-server, Celery workers (gpu, eval, cpu) and beat, Debian's darknet on
the micro network; the `gpu` worker trains on the CPU (the one stand-in: no GPU here).
Three trials: lr 0.004 trains, lr 0.05 diverges and is restarted at lower rates until it
trains, lr 2 diverges on every attempt and fails. The sweep's name is HTML.
"""
from __future__ import annotations

import json
import re

import pytest

from farm.runs.model import Outcome
from farm.store import Store
from farm.sweeps.model import SweepState
from farm.sweeps.report import fmt_hours
from farm.sweeps.service import leaderboard_of
from tests.conftest import wait_for
from tests.integration.test_board import chromium  # noqa: F401 - the browser fixture
from tests.integration.test_eval import start_eval_worker
from tests.integration.test_notify import notifying, receiver  # noqa: F401 - fixture
from tests.integration.test_sweep import cli, wait_sweep
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration

NAME = 'night <img src=x onerror="document.title=\'pwned\'"> & <script>pwned()</script>'

SPEC = """\
name: {name}
base: {{data: ds/obj.data, cfg: micro.cfg}}
parameters:
  learning_rate: [0.004, 0.05, 2.0]
concurrency: 1
budget: {{iterations: 200}}
eval_every: 100
objective: map50
policy: {{burn_in_min: 0, max_divergence_restarts: 5}}  # 0.05 needs 1-3 restarts; 2.0 fails
"""


def test_the_morning_report_shows_every_trial_offline_and_the_sweep_notifies_its_end_once(
        farm, monkeypatch, receiver, chromium, tmp_path, capsys, darknet_bin):  # noqa: F811
    notifying(farm, monkeypatch, receiver.url)
    micro_dataset(tmp_path / "ds", images=16)
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC.format(name=json.dumps(NAME)))  # a YAML string
    farm.worker("gpu1", "gpu")
    start_eval_worker(farm)
    farm.worker("cpu1", "cpu")  # sweep ticks and notifications
    farm.beat()
    code, out, err = cli(capsys, "sweep", "submit", str(spec))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    sweep = wait_sweep(store, sweep_id, timeout=300)
    assert sweep.state is SweepState.DONE, sweep.message
    runs = {t.index: store.runs.load(t.run_id) for t in store.sweeps.trials(sweep_id)}
    assert [runs[t].state.value for t in (0, 1, 2)] == ["completed", "completed", "failed"]
    restarted, failed = runs[1], runs[2]
    assert restarted.attempts[0].outcome is Outcome.DIVERGED and len(restarted.attempts) >= 2

    report = tmp_path / "report.html"
    code, out, err = cli(capsys, "sweep", "report", sweep_id[:10], "-o", str(report))
    assert code == 0, err
    assert out.strip() == f"{sweep_id} (done, 3 trials) -> {report}"

    context = chromium.new_context(offline=True, java_script_enabled=True)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    assert requests == [report.as_uri()]  # nothing fetched: it is all in the file
    # the HTML in the sweep's name is shown as text, never run or made an element
    assert page.title() == f"{NAME}: sweep report"
    assert page.text_content(".sweep-name") == NAME
    assert page.evaluate("document.querySelectorAll('script, img, iframe').length") == 0

    rows = page.eval_on_selector_all("tr.trial-row", "rs => rs.map(r => [r.dataset.trial, "
                                     "r.dataset.state, r.innerText])")
    assert sorted((int(t), s) for t, s, _ in rows) == [(0, "completed"), (1, "completed"),
                                                       (2, "failed")]
    for t, _, text in rows:
        assert f"learning_rate={[0.004, 0.05, 2.0][int(t)]}" in text
        assert runs[int(t)].id in text
    # ranked by the best mAP the evaluations recorded; the failed trial has none
    assert [int(t) for t, _, _ in rows][-1] == 2
    # best mAP@0.50 as `farm sweep show` ranks it: the highest, the earliest of ties
    evals = store.evaluations.all(runs[0].id)
    best = max(evals, key=lambda e: (e.map, -e.iteration))
    assert len(evals) == 2 and f"{best.map * 100:.2f} % @{best.iteration}" in rows[
        [int(t) for t, _, _ in rows].index(0)][2]

    # the failed trial: its reason, in the failures and in its own section
    failures = page.inner_text("#failures")
    assert failed.message in failures and "trial 2" in failures
    assert failed.message in page.inner_text("#trial-2")
    outcomes = page.eval_on_selector_all("#trial-2 tr.attempt", "rs => rs.map(r => "
                                         "r.dataset.outcome)")
    assert outcomes == [a.outcome.value for a in failed.attempts]

    # the restarted trial's lineage: each attempt, its outcome, what changed and why
    lineage = page.eval_on_selector_all("#trial-1 tr.attempt", "rs => rs.map(r => "
                                        "[...r.cells].map(c => c.innerText))")
    assert len(lineage) == len(restarted.attempts)
    for cells, a in zip(lineage, restarted.attempts):
        assert cells[5].startswith(a.outcome.value) and cells[6] == a.reason
        if a.number > 1:
            before, after = a.changes["learning_rate"]
            assert f"learning_rate {before} → {after}" in cells[7]
    last_lr = restarted.attempts[-1].hyper["learning_rate"]
    assert f"learning_rate 0.05 -> {last_lr}" in page.inner_text('tr.trial-row[data-trial="1"]')
    assert page.locator("#trial-1 .lineage-chart svg g.attempt").count() == \
        len(restarted.attempts)

    # every trial overlaid, each in its colour, the colour of its leaderboard swatch
    overlaid = page.eval_on_selector_all(
        "#curves svg g.trial:not(.legend-entry)", "gs => gs.map(g => [g.dataset.trial, "
        "g.dataset.colour, g.querySelectorAll('polyline').length])")
    assert {int(t) for t, _, _ in overlaid} >= {0, 1}
    assert len({c for _, c, _ in overlaid}) == len(overlaid)
    for t, colour, lines in overlaid:
        swatch = page.get_attribute(f'tr.trial-row[data-trial="{t}"] .swatch', "style")
        assert colour in swatch
    assert dict((int(t), n) for t, _, n in overlaid)[0] == 2  # avg loss and mAP
    box = page.locator("#curves svg").bounding_box()
    assert box["width"] > 600 and box["height"] > 300

    # wall time and GPU time, as the records say
    gpu = sum(a.ended_at - a.started_at for r in runs.values() for a in r.attempts)
    assert page.inner_text(".gpu-time") == fmt_hours(gpu)
    assert sum(len(r.attempts) for r in runs.values()) == int(re.search(
        r"in (\d+) attempt", page.inner_text("#summary")).group(1))
    context.close()

    # the webhook: the sweep's end once, the failed trial's run once
    wait_for(lambda: receiver.events("sweep.ended"), 60, 0.2, what="the sweep.ended POST")
    ticks = len(re.findall(r"farm\.sweep\.tick_all\[[^]]+\] succeeded", farm.log("cpu1")))
    wait_for(lambda: len(re.findall(r"farm\.sweep\.tick_all\[[^]]+\] succeeded",
                                    farm.log("cpu1"))) >= ticks + 3, 60, 0.5,
             what="three more ticks of beat")
    ended = receiver.events("sweep.ended")
    assert len(ended) == 1, ended
    assert ended[0]["id"] == f"sweep.ended:{sweep_id}"
    assert ended[0]["sweep"]["counts"] == {"completed": 2, "failed": 1}
    top = leaderboard_of(store, sweep_id)[2][0]
    assert ended[0]["sweep"]["name"] == NAME
    assert ended[0]["sweep"]["best"] == {"trial": top.trial, "run_id": top.run_id,
                                         "params": top.params, "objective": "map50",
                                         "value": top.best, "iteration": top.best_iteration}
    failures = receiver.events("run.failed")
    assert [f["run"]["id"] for f in failures] == [failed.id]
    assert failures[0]["run"]["message"] == failed.message
    assert failures[0]["run"]["trial"] == 2 and failures[0]["run"]["sweep"] == sweep_id
    assert not receiver.events("host.away")
    assert all(r["answered"] == 200 for r in receiver.requests)
