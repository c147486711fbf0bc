"""farm.plot.runchart: a run's chart over its restarts, decided once and drawn as SVG and PNG.

The lineages are the two a person meets: micro-net attempts that explode to 1e17 and nan
within a few iterations, each restarting from scratch at a lower rate, then one that
trains; and a long run whose attempts diverge late and resume from checkpoints.
"""
from __future__ import annotations

import math
import re

import cv2
import numpy as np

from farm.runs.chart import empty_state, fold
from farm.plot import axes, runchart
from farm.plot.axes import Scale


def entries(rows, t0=1000.0, dt=0.25):
    """Stream entries as ProgressStore.record writes them: (attempt, iteration, loss,
    avg loss, rate)."""
    return [(f"{k + 1}-0", {"a": str(a), "i": str(i), "loss": repr(loss), "avg": repr(avg),
                            "rate": repr(rate), "s": "0.1", "t": f"{t0 + k * dt:.3f}"})
            for k, (a, i, loss, avg, rate) in enumerate(rows)]


def exploding_restarts():
    """Attempts 1-3 (lr 0.08, 0.04, 0.02) explode to ~1e17 and nan by iteration 9-17;
    attempt 4 (lr 0.01) trains from 600 down to ~2 over 300 iterations."""
    rows, attempts, lr = [], [], 0.08
    for n in (1, 2, 3):
        avg, bad = 600.0, 8 + 4 * n
        for i in range(1, bad + 1):
            loss = 600.0 * 3 ** i if i > 4 else 600.0 - 20 * i
            avg = 0.9 * avg + 0.1 * loss
            rows.append((n, i, math.nan, math.nan, lr) if i == bad else (n, i, loss, avg, lr))
        attempts.append({"number": n, "outcome": "diverged", "start_iteration": 0,
                         "first_bad_iteration": bad - 3,
                         "hyper": {"learning_rate": f"{lr:g}"},
                         "changes": {} if n == 1 else {"learning_rate": [f"{lr * 2:g}",
                                                                         f"{lr:g}"]}})
        lr /= 2
    avg = 600.0
    for i in range(1, 301):
        avg = 0.9 * avg + 0.1 * (500 * math.exp(-i / 30) + 2 + (i % 7) / 3)
        rows.append((4, i, 500 * math.exp(-i / 30) + 2, avg, lr))
    attempts.append({"number": 4, "outcome": None, "start_iteration": 0,
                     "hyper": {"learning_rate": f"{lr:g}"}})
    return rows, attempts


def resumed_restarts():
    """Attempt 1 trains 400 -> ~1 and explodes at 2448; attempt 2 resumes from the
    checkpoint at 2000 and explodes at 4148; attempt 3 resumes from 4000."""
    rows, attempts, lr, avg = [], [], 0.002, 400.0
    for n, start, end, bad in ((1, 0, 2600, 2500), (2, 2000, 4300, 4200), (3, 4000, 5200, None)):
        for i in range(start + 1, end + 1):
            base = 400 * math.exp(-i / 150) + 1.2 * math.exp(-i / 3000) + 0.4
            loss = base * 10 ** min((i - (bad - 60)) / 4, 30) if bad and i >= bad - 60 else base
            avg = base if i == start + 1 else 0.9 * avg + 0.1 * loss
            rows.append((n, i, math.nan, math.nan, lr) if bad and i > bad else
                        (n, i, loss, avg, lr))
        attempts.append({"number": n, "outcome": "diverged" if bad else None,
                         "start_iteration": start,
                         "first_bad_iteration": bad - 52 if bad else None,
                         "hyper": {"learning_rate": f"{lr:g}"}})
        lr /= 2
    return rows, attempts


def chart_of(rows, attempts, **kw) -> runchart.RunChart:
    state = fold(empty_state(), entries(rows))
    return runchart.build(state["buckets"], attempts=attempts, n=state["n"], **kw)


def test_each_attempt_has_its_colour_and_the_good_one_fills_the_loss_scale():
    chart = chart_of(*exploding_restarts(), max_batches=500, state="running")
    colours = [s.colour for s in chart.attempts]
    assert len(set(colours)) == 4 and colours[0] == axes.attempt_colour(1)
    lo, hi, log = chart.loss
    assert log and hi < 1e4, "the scale follows training, not the 1e17 explosion"
    assert lo < 3 and hi > 500  # the good attempt's whole curve, 600 down to ~2
    assert chart.height_share(4) > 0.85
    # what does not fit is marked on the top edge: the explosion and the nan of 1-3
    for s in chart.attempts[:3]:
        assert len(s.nonfinite) == 1 and len(s.above) == 1, s.number
        assert s.above[0].peak > 1e6
    assert not chart.attempts[3].nonfinite and not chart.attempts[3].above


def test_a_diverged_attempts_training_counts_but_not_its_run_up_to_nan():
    chart = chart_of(*resumed_restarts(), max_batches=6000)
    lo, hi, log = chart.loss
    assert log and 300 < hi < 1e4  # attempt 1's start (400) is on the scale; 1e30 is not
    assert lo < 0.7
    assert chart.height_share(1) > 0.8
    assert chart.attempts[0].above and chart.attempts[1].above


def test_restarts_are_marked_where_each_attempt_resumed():
    chart = chart_of(*resumed_restarts(), max_batches=6000)
    assert [s.start for s in chart.attempts] == [0, 2000, 4000]
    svg = runchart.draw(chart).to_svg()
    marks = re.findall(r'<g class="restart" data-attempt="(\d)" data-iteration="(\d+)">'
                       r'<title>[^<]*</title><line x1="([\d.]+)"', svg)
    assert [(a, it) for a, it, _ in marks] == [("2", "2000"), ("3", "4000")]
    w = runchart.SIZE[0]
    x = Scale(0, 6000, False, runchart._LEFT, w - runchart._RIGHT)
    assert [round(float(px)) for *_, px in marks] == [round(x(2000)), round(x(4000))]


def test_the_learning_rate_is_on_a_log_scale_fitted_to_every_attempt():
    chart = chart_of(*exploding_restarts(), max_batches=500)
    lo, hi = chart.rate
    assert lo < 0.01 and hi > 0.08
    scale = Scale(lo, hi, True)
    # halving the rate three times moves the line by equal steps, none squashed flat
    steps = [scale.frac(r) for r in (0.08, 0.04, 0.02, 0.01)]
    gaps = [a - b for a, b in zip(steps, steps[1:])]
    assert min(gaps) > 0.15 and max(gaps) - min(gaps) < 1e-9


def test_the_x_axis_runs_to_max_batches_and_shows_the_eta():
    rows, attempts = resumed_restarts()
    chart = chart_of(rows, attempts, max_batches=6000, iteration=5200,
                     iterations_per_second=4.0, state="running")
    assert chart.x_hi == 6000 and chart.eta == 200.0
    svg = runchart.draw(chart).to_svg()
    assert "max_batches 6000 · ETA 3 min" in svg and ">6000<" in svg
    finished = chart_of(rows, attempts, max_batches=6000, state="completed",
                        iterations_per_second=4.0)
    assert finished.eta is None and "ETA" not in runchart.draw(finished).to_svg()


def test_the_legend_sits_under_the_title_and_over_the_plot():
    chart = chart_of(*exploding_restarts(), max_batches=500, title="r1 " + "x" * 40)
    fig = runchart.draw(chart)
    shapes = list(_shapes(fig.root))
    title_y = next(s.points[0][1] for s in shapes if s.kind == "text" and s.text == chart.title)
    legend = [s for cls, s in _tagged(fig.root) if cls == "legend-entry" and s.kind == "text"]
    plot = next(g for g in fig.root.shapes if getattr(g, "cls", "") == "plot-main")
    assert len(legend) >= 4 and all(title_y + 10 <= s.points[0][1] < plot.data["top"]
                                    for s in legend)


def test_an_empty_run_and_a_run_that_only_saw_nan_draw_a_message():
    empty = runchart.draw(runchart.build([]))
    assert "no iterations yet" in empty.to_svg()
    nan_only = chart_of([(1, i, math.nan, math.nan, 0.01) for i in range(1, 5)],
                        [{"number": 1, "outcome": "diverged", "first_bad_iteration": 1}])
    assert nan_only.loss is None
    img = cv2.imdecode(np.frombuffer(runchart.draw(nan_only).to_png(), np.uint8),
                       cv2.IMREAD_COLOR)
    assert img.shape == (runchart.SIZE[1], runchart.SIZE[0], 3)
    assert "no finite loss yet" in runchart.draw(nan_only).to_svg()


def test_text_is_escaped_in_the_svg():
    rows, attempts = exploding_restarts()
    attempts[0]["reason"] = "<script>alert(1)</script>"
    svg = runchart.draw(chart_of(rows, attempts, title="r<1>&")).to_svg()
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "r&lt;1&gt;&amp;" in svg


def test_the_png_draws_the_same_decisions():
    chart = chart_of(*exploding_restarts(), max_batches=500, state="running")
    fig = runchart.draw(chart, runchart.PNG_SIZE)
    img = fig.to_image()
    plot = next(g for g in fig.root.shapes if getattr(g, "cls", "") == "plot-main")
    top, bottom = plot.data["top"], plot.data["bottom"]
    b, g, r = (int(axes.attempt_colour(4)[k:k + 2], 16) for k in (5, 3, 1))
    hit = np.all(np.abs(img.astype(int) - (b, g, r)) <= 12, axis=2)
    rows = np.nonzero(hit[:, runchart._LEFT:runchart.PNG_SIZE[0] - runchart._RIGHT].any(axis=1))[0]
    rows = rows[(rows >= top) & (rows <= bottom)]
    assert (rows.max() - rows.min()) / (bottom - top) > 0.8  # the good attempt spans the plot


def _shapes(group):
    for s in group.shapes:
        if hasattr(s, "shapes"):
            yield from _shapes(s)
        else:
            yield s


def _tagged(group, cls=""):
    for s in group.shapes:
        if hasattr(s, "shapes"):
            yield from _tagged(s, s.cls or cls)
        else:
            yield cls, s
