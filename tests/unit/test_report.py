"""farm.sweeps.report and reporthtml: the morning report's facts, and its HTML escaped.

The HTML is parsed back (html.parser) rather than searched for strings: an injected tag
would be a start tag the parser sees, whatever its spelling.
"""
from __future__ import annotations

import html
import math
from html.parser import HTMLParser

import pytest

from farm.runs.chart import empty_state, fold
from farm.errors import BadInput
from farm.eval.evaluation import Evaluation
from farm.plot import overlay, runchart
from farm.runs.model import Attempt, Checkpoint, Outcome, Run, RunState
from farm.sweeps import controller as ctl
from farm.sweeps import report, reporthtml
from farm.sweeps.model import Sweep, SweepState
from farm.sweeps.spec import SweepSpec

EVIL = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">\'&<b>'
T0 = 1_700_000_000.0


def attempt(n, *, start=0, last=100, outcome=Outcome.COMPLETED, lr="0.05", host="gpuA",
            began=T0, seconds=600.0, changes=None, reason="first attempt", message="",
            bad=None) -> Attempt:
    return Attempt(number=n, command=["darknet"], hyper={"learning_rate": lr, "burn_in": "0"},
                   start_weights=None, start_iteration=start, host=host, workdir="/w",
                   log_path="/w/log", started_at=began,
                   ended_at=None if outcome is None else began + seconds, outcome=outcome,
                   last_iteration=last, changes=changes or {}, reason=reason,
                   message=message, first_bad_iteration=bad)


def restarted_run() -> Run:
    """Attempt 1 (lr 0.05, gpuA) diverges at 2448 after 40 min; attempt 2 (lr 0.025, gpuB)
    resumes from the checkpoint at 2000, 50 min; attempt 3 (lr 0.0125, gpuA) resumes from
    4000 and still runs (10 min so far)."""
    a1 = attempt(1, last=2460, outcome=Outcome.DIVERGED, seconds=2400, bad=2448,
                 message="avg loss nan at 2448")
    a2 = attempt(2, start=2000, last=4210, outcome=Outcome.DIVERGED, lr="0.025", host="gpuB",
                 began=T0 + 2500, seconds=3000, bad=4200,
                 changes={"learning_rate": ["0.05", "0.025"]},
                 reason="attempt 1 diverged at 2448; restarting from 2000")
    a3 = attempt(3, start=4000, last=4500, outcome=None, lr="0.0125", began=T0 + 5600,
                 changes={"learning_rate": ["0.025", "0.0125"]},
                 reason="attempt 2 diverged at 4200; restarting from 4000")
    ck = [Checkpoint(2000, "/c/2000", "/d/2000", True, 1, T0 + 2000),
          Checkpoint(4000, "/c/4000", "/d/4000", True, 2, T0 + 5000)]
    return Run(id="r1", data="/d/obj.data", cfg="/d/x.cfg", weights=None, base_dir="/d",
               overrides={}, policy={}, host="head", created_at=T0, max_batches=6000,
               state=RunState.RUNNING, attempts=[a1, a2, a3], checkpoints=ck,
               good_checkpoint="/c/4000", sweep="s1", trial=2)


def row(trial=2, **kw) -> ctl.Row:
    values = dict(rank=1, trial=trial, run_id="r1", params={"learning_rate": "0.05"},
                  state="running", best=0.8, best_iteration=4000, iterations=4500,
                  restarts=2, divergences=2, wall_time=6200.0)
    values.update(kw)
    return ctl.Row(**values)


def test_a_trial_counts_every_attempt_as_gpu_time_and_says_what_it_trained_with():
    now = T0 + 6200
    t = report.trial_report(row(), restarted_run(), [], [[2000, 0.5], [4000, 0.8],
                                                         [3000, 0.8]], now)
    # 40 min + 50 min + 10 min (the running attempt, up to now)
    assert t.gpu_seconds == pytest.approx(2400 + 3000 + 600)
    assert [a.outcome for a in t.attempts] == ["diverged", "diverged", "running"]
    assert t.best_map == (0.8, 3000)  # the highest, the earliest of ties
    # without a best, the attempt that wrote the newest good checkpoint (4000): attempt 2
    assert t.trained_with == "learning_rate 0.05 -> 0.025 after 1 restart"
    # with one, what the leaderboard attributes it to (farm.runs.effective.pick)
    text = "learning_rate 0.05 -> 0.0125 after 2 restarts"
    assert report.trial_report(row(settings={"text": text}), restarted_run(), [], [],
                               now).trained_with == text
    first = restarted_run()
    first.attempts, first.good_checkpoint = first.attempts[:1], None
    assert report.trained_with(row(), first) == "as requested"


def test_the_overlaid_curve_is_the_lineage_that_made_the_weights():
    run = restarted_run()
    rows = []
    for a, start, end in ((1, 0, 2460), (2, 2000, 4210), (3, 4000, 4500)):
        for i in range(start + 1, end + 1):
            bad = run.attempts[a - 1].first_bad_iteration
            avg = 1e9 if bad and i >= bad else 10.0 / a  # nan run-up: off the lineage
            rows.append((f"{len(rows) + 1}-0", {"a": str(a), "i": str(i), "loss": "1",
                                                "avg": repr(avg), "rate": "0.001"}))
    state = fold(empty_state(), rows)
    attempts = [{**a, "outcome": a["outcome"].value if a.get("outcome") else None}
                for a in run.to_dict()["attempts"]]
    chart = runchart.build(state["buckets"], attempts=attempts, max_batches=6000)
    t = report.trial_report(row(), run, [], [], T0 + 6200)
    curve = report._curve(t, run, chart, [[4000, 0.8]])
    xs = [x for x, _ in curve.loss]
    assert xs == sorted(xs) and max(v for _, v in curve.loss) < 1e9  # no run-up, no zigzag
    # attempt 1 up to 2000 (where attempt 2 resumed), attempt 2 up to 4000, then attempt 3
    assert {v for x, v in curve.loss if x < 1990} == {10.0}
    assert {v for x, v in curve.loss if 2010 < x < 3990} == {5.0}
    assert {v for x, v in curve.loss if x > 4010} == {10.0 / 3}
    assert curve.maps == [(4000, 0.8)]


def evil_report() -> report.SweepReport:
    """Every text a person or a log can put in a report, made hostile."""
    sweep = Sweep(id="s1", spec={}, created_at=T0, host=EVIL, name=EVIL, state=SweepState.DONE,
                  ended_at=T0 + 7200, message=EVIL, warnings=[EVIL])
    spec = SweepSpec(path="/x/s.yaml", data="/x/obj.data", cfg="/x/c.cfg", weights=None,
                     fixed={}, parameters=(), search="grid", trials=2, name=EVIL,
                     objective="min_avg_loss")
    run = restarted_run()
    for a in run.attempts:
        a.host, a.reason, a.message = EVIL, EVIL, EVIL
        a.changes = {EVIL: [EVIL, EVIL]}
        a.hyper = {EVIL: EVIL}
    bad = row(trial=2, rank=None, best=None, state="failed", note=EVIL,
              params={EVIL: EVIL}, run_id=EVIL)
    t = report.trial_report(bad, run, [Evaluation(iteration=100, map=0.5, evaluator=EVIL),
                                       Evaluation(iteration=200, error=EVIL)], [[100, 0.5]],
                            T0 + 6200)
    t.trained_with = EVIL
    t.screens_map = 0.7
    ov = overlay.build([overlay.Curve(key=2, label=EVIL, about=EVIL, loss=[(1, 2.0), (2, 1.0)],
                                      maps=[(2, 0.5)])], title=EVIL)
    chart = runchart.build([], attempts=[{"number": 1, "outcome": "diverged",
                                          "hyper": {EVIL: EVIL}, "reason": EVIL,
                                          "message": EVIL}], title=EVIL, message=EVIL,
                           state="failed")
    t.chart_svg = runchart.draw(chart).to_svg()
    ok = report.TrialReport(row=row(trial=0, params={"learning_rate": "0.004"},
                                    state="completed", best=1.5, run_id=None), run_id=None)
    return report.SweepReport(sweep=sweep, spec=spec, trials=[ok, t],
                              overlay_svg=overlay.draw(ov).to_svg(), overlaid=1,
                              generated_at=T0 + 7300, wall_seconds=7200,
                              gpu_seconds=t.gpu_seconds, gpu_by_host={EVIL: t.gpu_seconds},
                              counts={"completed": 1, "failed": 1, EVIL: 1})


class Parsed(HTMLParser):
    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


#: every element the report itself writes (its HTML and farm.plot's SVG)
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
               "p", "span", "code", "a", "br", "section", "dl", "dt", "dd", "table", "thead",
               "tbody", "tr", "th", "td", "ul", "li", "div", "footer", "svg", "g", "rect",
               "line", "polyline", "polygon", "circle", "path", "text"}


def test_every_text_in_the_report_is_shown_never_run():
    page = reporthtml.render(evil_report())
    parsed = Parsed(page)
    assert set(parsed.tags) <= REPORT_TAGS, set(parsed.tags) - REPORT_TAGS
    assert "script" not in parsed.tags and "img" not in parsed.tags and "b" not in parsed.tags
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    shown = "".join(parsed.text)
    # the hostile text reads as itself wherever it was: name, message, warning, params,
    # note, hosts, reasons, changes, settings, evaluator, evaluation error, charts
    assert shown.count(EVIL) >= 15, shown.count(EVIL)
    assert f'content="{reporthtml.CSP}"' in page and "default-src 'none'" in reporthtml.CSP


def test_the_report_has_the_columns_its_sweep_has_and_says_how_gpu_time_is_counted():
    page = reporthtml.render(evil_report())
    head = page[page.index('<table class="leaderboard">'):page.index("</thead>")]
    # min_avg_loss sweeps show both their objective and mAP; screens mAP when recorded
    assert "avg loss" in head and "best mAP@0.50" in head and "screens mAP@0.50" in head
    assert "1.67 GPU-h (1h40m)" in page  # 40 + 50 + 10 minutes
    assert html.escape(report.GPU_TIME_RULE) in page
    assert page.index('id="trial-0"') < page.index('id="trial-2"')  # by trial number
    failures = page[page.index('id="failures"'):page.index('id="trials"')]
    assert 'data-trial="2"' in failures and 'data-trial="0"' not in failures


def test_a_report_is_written_whole_or_not_at_all(tmp_path):
    out = reporthtml.write(evil_report(), tmp_path / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with pytest.raises(BadInput, match="does not exist"):
        reporthtml.write(evil_report(), tmp_path / "nowhere" / "r.html")
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(BadInput, match="cannot write the report"):
        reporthtml.write(evil_report(), tmp_path / "dir.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.html", "r.html"]
    assert math.isfinite(evil_report().gpu_seconds)
