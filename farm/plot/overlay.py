"""Trials overlaid: the avg loss and the mAP of many runs on shared axes, one colour each.

What TensorBoard and W&B users do to compare runs. Each trial is a group of its own in
the SVG, named with its parameters (a browser shows them on hover, and the board
highlights the trial's row); the legend lists the same names. Self-contained: an HTML
report embeds the SVG string as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from farm.plot import axes
from farm.plot.axes import Scale
from farm.plot.figure import Figure, text_width

#: points drawn per curve at most (a 50 000-iteration trial is thinned to its lows)
MAX_POINTS = 400
#: with more curves than this the legend would crowd out the plot: the trials are named
#: on hover (and by the table beside it, on the board)
LEGEND_MAX = 12


@dataclass
class Curve:
    key: int                                   # the trial's number
    label: str                                 # "#3 learning_rate=0.002"
    about: str = ""                            # the longer story (hover)
    loss: list[tuple[int, float]] = field(default_factory=list)   # (iteration, avg loss)
    maps: list[tuple[int, float]] = field(default_factory=list)   # (iteration, mAP 0..1)
    # (the overlay's map_label says which mAP: tiles, or whole screenshots)
    colour: str = ""


@dataclass
class Overlay:
    title: str
    curves: list[Curve]
    x_hi: float
    loss: tuple[float, float, bool] | None
    map_hi: float
    #: what the mAP panel shows: the tile mAP, or the screens mAP a screens sweep ranks on
    map_label: str = "mAP@0.50"

    def summary(self) -> dict:
        return {"x_hi": self.x_hi, "map_hi": self.map_hi, "map_label": self.map_label,
                "loss": None if self.loss is None else
                {"lo": self.loss[0], "hi": self.loss[1], "log": self.loss[2]},
                "curves": [{"key": c.key, "label": c.label, "colour": c.colour,
                            "loss_points": len(c.loss), "map_points": len(c.maps)}
                           for c in self.curves]}


def build(curves: list[Curve], *, title: str = "", max_batches: int = 0,
          map_label: str = "mAP@0.50") -> Overlay:
    """Colours in the given order (the leaderboard's), scales over every curve up to
    where it runs up to divergence (a failed trial's 1e4 would flatten the others)."""
    for k, c in enumerate(curves):
        c.colour = c.colour or axes.trial_colour(k)
        c.loss = thin(sorted(c.loss))
        c.maps = sorted(c.maps)
    loss = axes.fit([v for c in curves for v in axes.before_runup([v for _, v in c.loss])])
    top = max([v for c in curves for _, v in c.maps] + [0.0])
    map_hi = min(1.0, max(0.1, top * 1.1))
    x_hi = max([max_batches or 0, 1] + [i for c in curves for i, _ in c.loss + c.maps])
    return Overlay(title=title, curves=curves, x_hi=float(x_hi), loss=loss, map_hi=map_hi,
                   map_label=map_label)


def thin(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most `limit` points: the lowest of each run of neighbours (the loss that was
    reached), in order."""
    if len(points) <= limit:
        return points
    step = -(-len(points) // limit)
    return [min(points[k:k + step], key=lambda p: p[1]) for k in range(0, len(points), step)]


#: size of the board's overlay, in pixels
SIZE = (700, 600)
_LEFT, _RIGHT = 58, 16


def draw(ov: Overlay, size: tuple[int, int] = SIZE) -> Figure:
    w, h = size
    fig = Figure(w, h)
    fig.attrs = {"curves": len(ov.curves)}
    fig.style = (".trial:hover polyline{stroke-width:4}"
                 ".trial.hot polyline{stroke-width:4}"
                 ".faded .trial:not(.hot){opacity:.25}")
    top = 12
    if ov.title:
        fig.text(12, 20, ov.title, size=14, bold=True, colour="#222")
        top = 30
    if len(ov.curves) <= LEGEND_MAX:
        legend_bottom = _legend(fig, ov, 12, top + 12, w - 24)
    else:
        fig.text(12, top + 12, f"{len(ov.curves)} trials: each one's name shows on hover",
                 size=11, colour=axes.MUTED)
        legend_bottom = top + 18
    x0, x1 = _LEFT, w - _RIGHT
    x = Scale(0.0, ov.x_hi, False, x0, x1)
    if not ov.curves:
        fig.text(w / 2, h / 2, "no trial has trained yet", size=15, colour=axes.MUTED,
                 anchor="middle")
        return fig
    # the panels that have something to show share the height (loss gets more)
    shown = [p for p in ("loss", "maps") if any(getattr(c, p) for c in ov.curves)
             and (p != "loss" or ov.loss is not None)]
    top, bottom = legend_bottom + 16, h - 34
    share = {"loss": 0.56, "maps": 0.44} if len(shown) == 2 else {p: 1.0 for p in shown}
    panels = []
    room = bottom - top - 28 * (len(shown) - 1)
    for p in shown:
        height = room * share[p]
        if p == "loss":
            y = Scale(ov.loss[0], ov.loss[1], ov.loss[2], top + height, top)
            _panel(fig, x, y, top, top + height, "avg loss" + (" (log)" if y.log else ""),
                   axes.fmt)
        else:
            y = Scale(0.0, ov.map_hi, False, top + height, top)
            _panel(fig, x, y, top, top + height, ov.map_label, lambda v: f"{v * 100:.0f}%")
        panels.append((p, y))
        top += height + 28
    map_bottom = bottom
    for c in ov.curves:
        with fig.group("trial", {"trial": c.key, "colour": c.colour}, c.about or c.label):
            for what, scale in panels:
                pts = c.loss if what == "loss" else c.maps
                fig.path([(x(i), scale.clipped(v)) for i, v in pts], c.colour, 1.8)
                if what == "maps":
                    for i, v in pts:
                        fig.circle(x(i), scale.clipped(v), 2.6, c.colour)
    for v in x.ticks(6):
        fig.text(x(v), map_bottom + 15, axes.fmt_iteration(v), size=11, colour=axes.AXIS,
                 anchor="middle")
    fig.text(x1, map_bottom + 29, "iteration", size=11, colour=axes.AXIS, anchor="end")
    return fig


def _panel(fig: Figure, x: Scale, y: Scale, top: float, bottom: float, label: str,
           fmt) -> None:
    ticks = y.ticks(4)
    if len(ticks) > 6:
        ticks = ticks[::2]
    for v in ticks:
        fig.line(x.px0, y(v), x.px1, y(v), axes.GRID)
        fig.text(x.px0 - 6, y(v) + 4, fmt(v), size=11, colour=axes.AXIS, anchor="end")
    for v in x.ticks(6):
        fig.line(x(v), top, x(v), bottom, axes.GRID)
    fig.rect(x.px0, top, x.px1 - x.px0, bottom - top, stroke="#b0b0b0")
    fig.text(x.px0, top - 5, label, size=11, colour=axes.AXIS)


def _legend(fig: Figure, ov: Overlay, x0: float, y: float, width: float) -> float:
    x = x0
    for c in ov.curves:
        need = 22 + text_width(c.label, 11) + 12
        if x > x0 and x + need > x0 + width:
            x, y = x0, y + 16
        with fig.group("trial legend-entry", {"trial": c.key}, c.about or c.label):
            fig.line(x, y - 4, x + 16, y - 4, c.colour, 3)
            fig.text(x + 20, y, c.label, size=11, colour="#333")
        x += need
    return y + 6
