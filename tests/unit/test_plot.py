"""farm.plot: scales and ticks, the figure's two renderings, and trials overlaid."""
from __future__ import annotations

import math
import re

import cv2
import numpy as np

from farm.plot import axes, overlay
from farm.plot.figure import Figure


def test_nice_and_log_ticks():
    assert axes.nice_ticks(0, 6000, 6) == [0, 1000, 2000, 3000, 4000, 5000, 6000]
    assert axes.nice_ticks(0.58, 0.75, 4) == [0.6, 0.65, 0.7, 0.75]
    assert axes.log_ticks(0.4, 500) == [1, 10, 100]
    assert axes.log_ticks(2, 30) == [2, 5, 10, 20]
    assert axes.fmt(1e-4) == "1e-4" and axes.fmt(0.0123) == "0.0123" and axes.fmt(3e17) == "3e17"
    assert axes.fmt_iteration(50000) == "50k" and axes.fmt_duration(200) == "3 min"


def test_fit_is_robust_to_a_spike_but_shows_a_smooth_start_whole():
    smooth = [500 * math.exp(-i / 50) + 1 for i in range(1000)]
    lo, hi, log = axes.fit(smooth)
    assert log and lo < 1.01 and hi >= 500  # the whole decay
    lo, hi, log = axes.fit(smooth + [1e17])
    assert hi < 1e4  # one spike does not flatten the rest
    lo, hi, log = axes.fit([0.6, 0.7, 0.65])
    assert not log and lo < 0.6 and 0.7 < hi < 0.8
    assert axes.fit([math.nan, math.inf]) is None


def test_the_figure_renders_to_svg_and_png_alike():
    fig = Figure(200, 100)
    with fig.group("series", {"trial": 3}, "trial 3 <lr=0.1>"):
        fig.path([(10, 90), (190, 10)], "#ff0000", 3)
    fig.text(100, 50, "a → b", anchor="middle")
    svg = fig.to_svg()
    assert '<g class="series" data-trial="3"><title>trial 3 &lt;lr=0.1&gt;</title>' in svg
    assert re.search(r'<polyline points="10,90 190,10"[^>]*stroke="#ff0000"', svg)
    img = cv2.imdecode(np.frombuffer(fig.to_png(), np.uint8), cv2.IMREAD_COLOR)
    red = (img[:, :, 2] > 200) & (img[:, :, 1] < 80) & (img[:, :, 0] < 80)
    assert red[88:92, 8:14].any() and red[8:12, 186:192].any()  # the same line, both ends
    assert (img[40:55, 70:130] < 128).any()  # the text (spelled "a -> b" by OpenCV)


def curve(key, lr, n=6000, best=0.8):
    loss = [(i, 300 * math.exp(-i * lr) + 1) for i in range(10, n + 1, 10)]
    maps = [(i, best * (1 - math.exp(-i / 1500))) for i in range(1000, n + 1, 1000)]
    return overlay.Curve(key=key, label=f"#{key} learning_rate={lr}", loss=loss, maps=maps)


def test_overlaid_trials_each_have_a_colour_and_name_their_parameters():
    ov = overlay.build([curve(k, 0.001 * (k + 1), best=0.5 + k / 20) for k in range(8)],
                       max_batches=6000)
    assert len({c.colour for c in ov.curves}) == 8
    assert ov.x_hi == 6000 and ov.loss[2] and 0.8 < ov.map_hi <= 1.0
    assert all(len(c.loss) <= overlay.MAX_POINTS for c in ov.curves)
    svg = overlay.draw(ov).to_svg()
    groups = re.findall(r'<g class="trial" data-trial="(\d+)" data-colour="([^"]+)">'
                        r'<title>([^<]+)</title>', svg)
    assert [(int(k), title) for k, _, title in groups] == \
        [(k, f"#{k} learning_rate={0.001 * (k + 1)}") for k in range(8)]
    assert {c for _, c, _ in groups} == {c.colour for c in ov.curves}
    assert svg.count('class="trial legend-entry"') == 8


def test_a_failed_trials_run_up_to_nan_does_not_set_the_loss_scale():
    healthy = curve(0, 0.002)
    exploding = overlay.Curve(key=1, label="#1 learning_rate=5.0", loss=[
        (i, v) for i, v in [(1, 90.0), (2, 60.0), (3, 70.0), (4, 4e3), (5, 1e4), (6, 1e8)]])
    ov = overlay.build([healthy, exploding])
    assert ov.loss[1] < 1000  # its 1e4 and 1e8 are drawn on the top edge, clipped
    assert ov.loss[0] < 2  # the healthy trial's low end is on the scale


def test_thinning_keeps_the_lows():
    points = [(i, 5.0 if i != 4321 else 0.1) for i in range(10000)]
    thin = overlay.thin(points, 100)
    assert len(thin) <= 100 and (4321, 0.1) in thin


def test_many_trials_are_named_on_hover_not_in_a_legend_that_would_crowd_the_plot():
    ov = overlay.build([curve(k, 0.0005 * (k + 1)) for k in range(30)])
    svg = overlay.draw(ov).to_svg()
    assert "legend-entry" not in svg and "30 trials: each one's name shows on hover" in svg
    assert svg.count('<g class="trial" data-trial=') == 30
