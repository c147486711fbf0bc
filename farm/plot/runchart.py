"""A run's chart over its whole lineage: the decisions (`build`) and the drawing (`draw`).

A run with restarts is several darknet processes. Each attempt gets its own colour, and
the loss scale is fitted to the attempts that did not diverge: a diverged attempt's
avg loss climbs to 1e17 before nan, and a scale that includes it lays the good attempt
flat on the floor. Whatever does not fit (the explosion, nan/inf) is marked on the top
edge instead of stretching the scale. A restart is marked where its attempt resumed
(the checkpoint's iteration), the learning rate is drawn on a log scale (restarts halve
it; burn-in ramps it up over decades), and the x axis runs to max_batches with the ETA.

Input is the folded metrics stream (farm.runs.chart buckets) and the run's records as plain
dicts (Attempt and evaluation dicts), so the board, `farm chart` and reports share it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from farm.runs.chart import (A, ALAST, AMAX, AMIN, BAD, FIRST, LAST, LMAX, LMIN, RATE,
                        ChartStream, iterations_per_second, update_chart)
from farm.eval.evaluation import Evaluation
from farm.plot import axes
from farm.plot.axes import Scale
from farm.plot.figure import Figure, text_width
from farm.runs.effective import effective_settings

#: the learning-rate panel shows at most this many decades below the highest rate
#: (burn-in starts at rate × (1/burn_in)^4: 1e-12 of it, which would squash the rest)
RATE_DECADES = 4


@dataclass
class Span:
    """Iterations [first, last] of one attempt with values off the loss scale."""

    first: int
    last: int
    peak: float | None = None   # the highest finite avg loss in it (None: nan/inf)


@dataclass
class AttemptSeries:
    number: int
    colour: str
    outcome: str | None
    start: int                       # the iteration it resumed from
    label: str                       # the legend's words
    about: str                       # the longer story (hover)
    avg: list[tuple[float, float]] = field(default_factory=list)     # (iteration, avg loss)
    band: list[tuple[float, float, float]] = field(default_factory=list)  # (it, min, max)
    rate: list[tuple[float, float]] = field(default_factory=list)
    nonfinite: list[Span] = field(default_factory=list)
    above: list[Span] = field(default_factory=list)


@dataclass
class RunChart:
    title: str
    subtitle: str
    x_hi: float
    loss: tuple[float, float, bool] | None       # (lo, hi, log)
    rate: tuple[float, float] | None              # log scale
    attempts: list[AttemptSeries]
    maps: list[tuple[int, float]]                 # the farm's evaluations
    darknet_maps: list[tuple[int, float]]         # darknet's own -map blocks
    n: int = 0                                    # metric entries drawn
    behind: int = 0                               # metric entries not folded yet
    iteration: int = 0
    max_batches: int = 0
    eta: float | None = None                      # seconds to max_batches
    running: bool = False

    def loss_scale(self, px0: float = 0.0, px1: float = 1.0) -> Scale | None:
        if self.loss is None:
            return None
        lo, hi, log = self.loss
        return Scale(lo, hi, log, px0, px1)

    def height_share(self, number: int) -> float:
        """How much of the loss axis the avg-loss curve of attempt `number` covers
        (0..1): what makes a curve readable."""
        scale = self.loss_scale()
        series = next((s for s in self.attempts if s.number == number), None)
        if scale is None or series is None or not series.avg:
            return 0.0
        fracs = [min(max(scale.frac(v), 0.0), 1.0) for _, v in series.avg]
        return max(fracs) - min(fracs)

    def summary(self) -> dict[str, Any]:
        """The decisions as data (the board's tests and its hover read them)."""
        return {"loss": None if self.loss is None else
                {"lo": self.loss[0], "hi": self.loss[1], "log": self.loss[2]},
                "rate": None if self.rate is None else {"lo": self.rate[0], "hi": self.rate[1]},
                "x_hi": self.x_hi, "iteration": self.iteration, "eta": self.eta,
                "attempts": [{"number": s.number, "colour": s.colour, "outcome": s.outcome,
                              "start": s.start, "label": s.label,
                              "height_share": round(self.height_share(s.number), 3),
                              "nonfinite": len(s.nonfinite), "above": len(s.above)}
                             for s in self.attempts]}


# ---------------------------------------------------------------------------------------
# The decisions


class ChartProgress(ChartStream, Protocol):
    """What the chart reads of a run's progress (farm.store.progress.ProgressStore)."""

    def live(self, run_id: str) -> dict[str, str]: ...

    def maps(self, run_id: str) -> list[dict[str, Any]]: ...


class ChartEvaluations(Protocol):
    """What the chart reads of a run's evaluations (farm.store.evaluations)."""

    def all(self, run_id: str) -> list[Evaluation]: ...


class ChartSource(Protocol):
    """What `for_run` needs of the store (farm.store.Store)."""

    progress: ChartProgress
    evaluations: ChartEvaluations


def for_run(store: ChartSource, run, *, fold: int | None = None,
            title: str | None = None) -> RunChart:
    """The chart of `run` (a farm.runs.model.Run) from the store: its folded metrics
    (folding at most `fold` new entries now), attempts, evaluations and live progress."""
    state = update_chart(store.progress, run.id, max_entries=fold)
    live = store.progress.live(run.id)
    attempts = [{**d, "outcome": a.outcome.value if a.outcome else None,
                 "rate": a.rate_value, "effective": effective_settings(run, a).text}
                for a, d in zip(run.attempts, run.to_dict()["attempts"])]
    return build(state["buckets"], attempts=attempts, evaluations=store.evaluations.all(run.id),
                 darknet_maps=store.progress.maps(run.id), max_batches=run.max_batches,
                 iteration=int(live["iteration"]) if live.get("iteration") else None,
                 iterations_per_second=iterations_per_second(state), state=run.state.value,
                 message=run.message, title=run.id if title is None else title, n=state["n"],
                 behind=state.get("behind", 0))


def build(buckets: list[list], *, attempts: list[dict] = (), evaluations=(),
          darknet_maps=(), max_batches: int = 0, iteration: int | None = None,
          iterations_per_second: float = 0.0, state: str = "", message: str = "",
          title: str = "", n: int = 0, behind: int = 0) -> RunChart:
    """The chart of a run. `attempts`: Attempt dicts (number, outcome, start_iteration,
    first_bad_iteration, hyper, changes, reason; `rate` and `effective` as for_run adds
    them); `evaluations` and `darknet_maps`: dicts with iteration and map (a fraction),
    or (iteration, map) pairs."""
    about = {int(a["number"]): a for a in attempts}
    numbers = sorted({int(b[A]) for b in buckets} | set(about))
    by_attempt: dict[int, list[list]] = {k: [] for k in numbers}
    for b in buckets:
        by_attempt[int(b[A])].append(b)
    diverged = {k for k in numbers if (about.get(k) or {}).get("outcome") == "diverged"}
    loss = axes.fit(_scale_values(by_attempt, about, diverged))
    series = [_series(k, by_attempt[k], about.get(k, {}), loss) for k in numbers]
    rate = _rate_range(series)
    maps = _points(evaluations)
    dmaps = _points(darknet_maps)
    last = max([b[LAST] for b in buckets] + [0])
    now = int(iteration) if iteration else int(last)
    x_hi = max(max_batches or 0, last, *(i for i, _ in maps + dmaps), 1)
    running = state == "running"
    eta = ((max_batches - now) / iterations_per_second
           if running and iterations_per_second > 0 and max_batches > now else None)
    return RunChart(title=title, subtitle=_subtitle(state, message, now, max_batches,
                                                    iterations_per_second if running else 0,
                                                    eta),
                    x_hi=float(x_hi), loss=loss, rate=rate, attempts=series, maps=maps,
                    darknet_maps=dmaps, n=n, behind=behind, iteration=now,
                    max_batches=max_batches or 0, eta=eta, running=running)


def _scale_values(by_attempt: dict[int, list[list]], about: dict[int, dict],
                  diverged: set[int]) -> list[float]:
    """Finite avg loss that chooses the scale: every attempt before its first bad
    iteration, and of a diverged attempt only what came before its run-up (once its avg
    loss climbs over axes.RUNUP times the lowest it had reached, it is exploding: 1e17 just
    before nan is no part of the training anyone wants to read)."""
    values: list[float] = []
    for k, rows in by_attempt.items():
        bad = (about.get(k) or {}).get("first_bad_iteration")
        lowest = math.inf
        for b in rows:
            if bad is not None and b[LAST] >= bad:
                break
            finite = [v for v in (b[AMIN], b[AMAX], b[ALAST]) if _finite(v)]
            if not finite:
                continue
            if k in diverged:
                lowest = min(lowest, *finite)
                if max(finite) > axes.RUNUP * lowest:
                    break
            values += finite
    return values


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _series(number: int, rows: list[list], a: dict,
            loss: tuple[float, float, bool] | None) -> AttemptSeries:
    scale = Scale(*loss) if loss else None
    s = AttemptSeries(number=number, colour=axes.attempt_colour(number),
                      outcome=a.get("outcome"), start=_start(a, rows),
                      label=_label(number, a, rows), about=_about(number, a))
    for b in rows:
        x = (b[FIRST] + b[LAST]) / 2
        if _finite(b[ALAST]):
            s.avg.append((x, b[ALAST]))
        if _finite(b[LMIN]) and _finite(b[LMAX]) and _finite(b[ALAST]) and (
                scale is None or not scale.above(b[ALAST])):
            s.band.append((x, b[LMIN], b[LMAX]))
        if _finite(b[RATE]) and b[RATE] > 0:
            s.rate.append((x, b[RATE]))
        if b[BAD]:
            _extend(s.nonfinite, b, None)
        if scale is not None and _finite(b[AMAX]) and scale.above(b[AMAX]):
            _extend(s.above, b, b[AMAX])
    return s


def _extend(spans: list[Span], b: list, peak: float | None) -> None:
    """Neighbouring buckets make one span (one marker, not hundreds)."""
    if spans and b[FIRST] - spans[-1].last <= max(1, b[LAST] - b[FIRST] + 1):
        spans[-1].last = b[LAST]
        if peak is not None:
            spans[-1].peak = max(spans[-1].peak or peak, peak)
        return
    spans.append(Span(b[FIRST], b[LAST], peak))


def _start(a: dict, rows: list[list]) -> int:
    if a.get("start_iteration") is not None:
        return int(a["start_iteration"])
    return int(rows[0][FIRST]) if rows else 0


def _hyper(a: dict) -> dict[str, str]:
    return a.get("hyper") or {}


def _label(number: int, a: dict, rows: list[list]) -> str:
    words = []
    lr = a.get("rate") or _hyper(a).get("learning_rate")
    if lr:
        words.append(f"lr {float(lr):.4g}")
    if number > 1:
        words.append(f"from {_start(a, rows)}")
    outcome = a.get("outcome")
    if outcome == "diverged" and a.get("first_bad_iteration") is not None:
        words.append(f"diverged at {a['first_bad_iteration']}")
    elif outcome:
        words.append(outcome.replace("_", " "))
    elif a:
        words.append("running")
    return f"attempt {number}: " + ", ".join(words) if words else f"attempt {number}"


def _about(number: int, a: dict) -> str:
    lines = [f"attempt {number}: {a.get('reason') or 'first attempt'}"]
    changes = a.get("changes") or {}
    if changes:
        lines.append("changed: " + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in changes.items()))
    if a.get("effective"):
        lines.append(f"trained with: {a['effective']}")
    elif _hyper(a):
        lines.append("trained with: " + ", ".join(f"{k}={v}" for k, v in sorted(_hyper(a).items())))
    if a.get("outcome"):
        lines.append(f"outcome: {a['outcome']}" + (f" ({a['message']})" if a.get("message")
                                                    else ""))
    return "\n".join(lines)


def _rate_range(series: list[AttemptSeries]) -> tuple[float, float] | None:
    rates = [r for s in series for _, r in s.rate]
    if not rates:
        return None
    hi, lo = max(rates), min(rates)
    lo = max(lo, hi / 10 ** RATE_DECADES)
    if hi <= lo * 1.0001:
        lo, hi = hi / 3, hi * 3
    return lo / 1.3, hi * 1.3


def _points(records) -> list[tuple[int, float]]:
    out = []
    for r in records or ():
        it, value = (r.iteration, r.map) if isinstance(r, Evaluation) else \
            (r.get("iteration"), r.get("map")) if isinstance(r, dict) else r
        if it is not None and value is not None and math.isfinite(float(value)):
            out.append((int(it), float(value)))
    return sorted(out)


def _subtitle(state: str, message: str, iteration: int, max_batches: int, ips: float,
              eta: float | None) -> str:
    words = [state] if state else []
    words.append(f"iteration {iteration}" + (f"/{max_batches}" if max_batches else ""))
    if ips:
        words.append(f"{ips:.3g} it/s")
    if eta is not None:
        words.append(f"ETA {axes.fmt_duration(eta)}")
    if message and state in ("failed", "cancelled"):
        words.append(message)
    return " · ".join(words)


# ---------------------------------------------------------------------------------------
# The drawing

#: size of the board's chart and of the PNG (`farm chart`, sweep export), in pixels
SIZE, PNG_SIZE = (1100, 560), (1200, 680)
_LEFT, _RIGHT, _RATE_H, _LANE = 64, 56, 84, 18


def draw(chart: RunChart, size: tuple[int, int] = SIZE) -> Figure:
    w, h = size
    fig = Figure(w, h)
    fig.attrs = {"n": chart.n, "last-iteration": chart.iteration,
                 "attempts": len(chart.attempts), "maps": len(chart.maps)}
    fig.style = (".attempt:hover polyline{stroke-width:3.5}"
                 ".legend-entry{cursor:default}")
    fig.text(12, 22, chart.title or "training chart", size=15, bold=True, colour="#222")
    fig.text(w - 12, 22, chart.subtitle, size=12, colour=axes.AXIS, anchor="end")
    legend_bottom = _legend(fig, chart, 12, 44, w - 24)
    x0, x1 = _LEFT, w - _RIGHT
    top = legend_bottom + _LANE + 6
    rate_top = h - 34 - _RATE_H
    main_bottom = rate_top - 22
    if not chart.attempts or chart.loss is None:
        fig.rect(x0, top, x1 - x0, main_bottom - top, stroke=axes.GRID)
        fig.text((x0 + x1) / 2, (top + main_bottom) / 2,
                 "no iterations yet" if not chart.attempts else "no finite loss yet",
                 size=16, colour=axes.MUTED, anchor="middle")
        return fig
    x = Scale(0.0, chart.x_hi, False, x0, x1)
    y = chart.loss_scale(main_bottom, top)
    with fig.group("plot-main", {"top": top, "bottom": main_bottom}):
        fig.rect(x0, top, x1 - x0, main_bottom - top, fill="#ffffff")
    _grid(fig, x, y, top, main_bottom, "avg loss" + (" (log)" if y.log else ""),
          axes.fmt)
    for s in chart.attempts:
        _draw_attempt(fig, s, x, y)
    _draw_maps(fig, chart, x, top, main_bottom)
    _draw_offscale(fig, chart, x, top)
    if chart.rate is not None:
        r = Scale(chart.rate[0], chart.rate[1], True, rate_top + _RATE_H, rate_top)
        _grid(fig, x, r, rate_top, rate_top + _RATE_H, "learning rate (log)", axes.fmt,
              max_ticks=3)
        for s in chart.attempts:
            with fig.group("rate", {"attempt": s.number}):
                fig.path([(x(i), r.clipped(v)) for i, v in s.rate], s.colour, 1.6)
    bottom = rate_top + _RATE_H
    _restarts(fig, chart, x, top, bottom, legend_bottom)
    _x_axis(fig, chart, x, top, bottom)
    return fig


def _legend(fig: Figure, chart: RunChart, x0: float, y: float, width: float) -> float:
    """Entries packed in rows under the title; returns the y below the last row."""
    entries: list[tuple[str, str, str, str, dict]] = [
        ("line", s.colour, s.label, s.about, {"attempt": s.number}) for s in chart.attempts]
    if chart.attempts:
        entries.append(("band", axes.MUTED, "loss min-max", "darknet's loss (not averaged), "
                        "min to max in each bucket", {}))
    if chart.maps:
        entries.append(("dot", axes.MAP_COLOUR, "mAP@0.50 (farm)", "the farm's evaluation of "
                        "each checkpoint (right axis)", {}))
    if chart.darknet_maps:
        entries.append(("diamond", axes.DARKNET_MAP_COLOUR, "mAP (darknet -map)",
                        "darknet's own -map blocks (right axis)", {}))
    if any(s.nonfinite for s in chart.attempts):
        entries.append(("x", axes.AXIS, "nan/inf", "iterations whose loss was not finite "
                        "(top edge, attempt's colour)", {}))
    if any(s.above for s in chart.attempts):
        entries.append(("up", axes.AXIS, "above the scale", "avg loss above the top of the "
                        "scale (top edge, attempt's colour)", {}))
    x = x0
    for kind, colour, label, about, data in entries:
        need = 22 + text_width(label, 12) + 16
        if x > x0 and x + need > x0 + width:
            x, y = x0, y + 18
        with fig.group("legend-entry", data, about):
            _swatch(fig, kind, colour, x, y - 4)
            fig.text(x + 20, y, label, size=12, colour="#333")
        x += need
    return y + 8


def _swatch(fig: Figure, kind: str, colour: str, x: float, y: float) -> None:
    if kind == "line":
        fig.line(x, y, x + 16, y, colour, 3)
    elif kind == "band":
        fig.rect(x, y - 5, 16, 10, fill=colour, opacity=0.25)
    elif kind == "dot":
        fig.circle(x + 8, y, 4, colour)
    else:
        fig.marker(kind, x + 8, y, 9, colour)


def _grid(fig: Figure, x: Scale, y: Scale, top: float, bottom: float, label: str, fmt,
          max_ticks: int = 6) -> None:
    ticks = y.ticks()
    if len(ticks) > max_ticks:
        ticks = ticks[::math.ceil(len(ticks) / max_ticks)]
    for v in ticks:
        py = y(v)
        fig.line(x.px0, py, x.px1, py, axes.GRID)
        fig.text(x.px0 - 6, py + 4, fmt(v), size=11, colour=axes.AXIS, anchor="end")
    for v in x.ticks(8):
        fig.line(x(v), top, x(v), bottom, axes.GRID)
    fig.rect(x.px0, top, x.px1 - x.px0, bottom - top, stroke="#b0b0b0")
    fig.text(x.px1 - 4, top - 5, label, size=11, colour=axes.AXIS, anchor="end")


def _draw_attempt(fig: Figure, s: AttemptSeries, x: Scale, y: Scale) -> None:
    with fig.group("attempt", {"attempt": s.number, "colour": s.colour}, s.about):
        for run in _runs(s.band, lambda p: True):
            upper = [(x(i), y.clipped(hi)) for i, _, hi in run]
            lower = [(x(i), y.clipped(lo)) for i, lo, _ in reversed(run)]
            fig.polygon(upper + lower, s.colour, opacity=0.2, stroke=s.colour)
        for run in _runs(s.avg, lambda p: not y.above(p[1])):
            fig.path([(x(i), y.clipped(v)) for i, v in run], s.colour, 2.2)


def _runs(points: list, keep) -> list[list]:
    """Consecutive points that `keep`, each run drawn as one line."""
    out: list[list] = [[]]
    for p in points:
        if keep(p):
            out[-1].append(p)
        elif out[-1]:
            out.append([])
    return [r for r in out if r]


def _draw_offscale(fig: Figure, chart: RunChart, x: Scale, top: float) -> None:
    """nan/inf (a cross) and avg loss above the scale (a triangle) on the top edge."""
    for s in chart.attempts:
        with fig.group("offscale", {"attempt": s.number}):
            for span in s.above:
                with fig.group("above", {"attempt": s.number, "first": span.first},
                               f"attempt {s.number}: avg loss up to {axes.fmt(span.peak)} "
                               f"at iterations {span.first}-{span.last} (above the scale)"):
                    fig.line(x(span.first), top + 1.5, x(max(span.last, span.first)),
                             top + 1.5, s.colour, 3)
                    fig.marker("up", x(span.first), top + 8, 10, s.colour)
            for span in s.nonfinite:
                with fig.group("nonfinite", {"attempt": s.number, "first": span.first},
                               f"attempt {s.number}: loss not finite (nan/inf) at iterations "
                               f"{span.first}-{span.last}"):
                    fig.marker("x", x(span.first), top + 9, 9, s.colour)


def _draw_maps(fig: Figure, chart: RunChart, x: Scale, top: float, bottom: float) -> None:
    m = Scale(0.0, 1.0, False, bottom, top)
    if chart.maps or chart.darknet_maps:
        for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            fig.text(x.px1 + 6, m(v) + 4, f"{v * 100:.0f}%", size=11, colour=axes.MAP_COLOUR)
    with fig.group("maps", {"source": "darknet"}):
        fig.path([(x(i), m(v)) for i, v in chart.darknet_maps], axes.DARKNET_MAP_COLOUR, 1,
                 dash=(3, 3))
        for i, v in chart.darknet_maps:
            fig.marker("diamond", x(i), m(v), 9, axes.DARKNET_MAP_COLOUR)
    if not chart.maps:
        return
    best = max(chart.maps, key=lambda p: (p[1], -p[0]))
    with fig.group("maps", {"source": "farm"}):
        fig.path([(x(i), m(v)) for i, v in chart.maps], axes.MAP_COLOUR, 1.2)
        labelled = chart.maps if len(chart.maps) <= 12 else [best, chart.maps[-1]]
        for i, v in chart.maps:
            with fig.group("map", {"iteration": i}, f"mAP@0.50 {v * 100:.2f}% at {i}"):
                fig.circle(x(i), m(v), 4.5, axes.MAP_COLOUR, stroke="#ffffff")
        for i, v in labelled:
            fig.text(x(i), m(v) - 9, f"{v * 100:.1f}%", size=11, colour=axes.MAP_COLOUR,
                     anchor="middle", bold=(i, v) == best)


def _restarts(fig: Figure, chart: RunChart, x: Scale, top: float, bottom: float,
              lane: float) -> None:
    """A dashed line where each attempt after the first resumed, and a numbered flag in
    the lane above the plot (flags at one place stand side by side)."""
    placed: list[float] = []
    for s in chart.attempts[1:]:
        px = x(s.start)
        with fig.group("restart", {"attempt": s.number, "iteration": s.start},
                       s.about):
            fig.line(px, top, px, bottom, s.colour, 1.4, dash=(5, 4), opacity=0.9)
            fx = px
            while any(abs(fx - p) < 18 for p in placed):
                fx += 18
            placed.append(fx)
            fig.marker("down", fx, lane + 6, 14, s.colour)
            fig.text(fx, lane + 3, str(s.number), size=9, colour="#ffffff", anchor="middle",
                     bold=True)


def _x_axis(fig: Figure, chart: RunChart, x: Scale, top: float, bottom: float) -> None:
    for v in x.ticks(8):
        fig.text(x(v), bottom + 15, axes.fmt_iteration(v), size=11, colour=axes.AXIS,
                 anchor="middle")
    fig.text(x.px0, bottom + 30, "iteration", size=11, colour=axes.AXIS)
    if chart.running and chart.iteration:
        px = x(chart.iteration)
        fig.line(px, top, px, bottom, axes.AXIS, 1, dash=(2, 3))
    if chart.max_batches:
        end = f"max_batches {chart.max_batches}"
        if chart.eta is not None:
            end += f" · ETA {axes.fmt_duration(chart.eta)}"
        fig.text(x.px1, bottom + 30, end, size=11, colour=axes.AXIS, anchor="end")
