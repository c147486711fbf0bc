"""Scales, ticks, number labels and colours shared by the farm's charts."""
from __future__ import annotations

import math
from dataclasses import dataclass

#: one colour per attempt of a run, in order (no red: red is mAP; no grey: grey is
#: darknet's own mAP and the axes); colour-blind safe first
ATTEMPT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22")
#: one colour per trial when trials are overlaid (the 20 most distinct first)
TRIAL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
                 "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
                 "#756bb1", "#636363")
MAP_COLOUR, DARKNET_MAP_COLOUR = "#d62728", "#555555"
AXIS, GRID, MUTED = "#555555", "#e6e6e6", "#888888"

#: a scale switches to log when its top is this many times its bottom
LOG_RATIO = 20.0
#: a scale's top is at most this many times (log) or spans (linear) over its 99th
#: percentile: a spike does not flatten the curve, a smooth start is still shown whole
OUTLIER_FACTOR = 10.0
#: an avg loss this many times above the lowest it had reached is a run-up to nan: left
#: out of a loss scale (drawn off-scale, on the top edge)
RUNUP = 3.0


def before_runup(values: list[float]) -> list[float]:
    """`values` (avg loss along iterations) up to where they run up to divergence:
    1e17 just before nan is no part of the training anyone wants to read."""
    out: list[float] = []
    lowest = math.inf
    for v in values:
        lowest = min(lowest, v)
        if v > RUNUP * lowest:
            break
        out.append(v)
    return out


def attempt_colour(number: int) -> str:
    return ATTEMPT_COLOURS[(number - 1) % len(ATTEMPT_COLOURS)]


def trial_colour(k: int) -> str:
    return TRIAL_COLOURS[k % len(TRIAL_COLOURS)]


@dataclass
class Scale:
    """Data range [lo, hi] onto pixels [px0, px1] (px0 is where lo goes: the bottom of a
    y axis, the left of an x axis)."""

    lo: float
    hi: float
    log: bool = False
    px0: float = 0.0
    px1: float = 1.0

    def frac(self, v: float) -> float:
        if self.log:
            v = max(v, 1e-300)
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi)
                                                             - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def __call__(self, v: float) -> float:
        return self.px0 + self.frac(v) * (self.px1 - self.px0)

    def clipped(self, v: float) -> float:
        return self.px0 + min(max(self.frac(v), 0.0), 1.0) * (self.px1 - self.px0)

    def above(self, v: float) -> bool:
        return self.frac(v) > 1.0 + 1e-9

    def ticks(self, count: int = 5) -> list[float]:
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi, count)

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "log": self.log}


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) inside [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades inside [lo, hi]; with 2 and 5 between them when there are few."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** k for k in range(a, b + 1)]
    if b - a <= 2:
        mults = (1, 2, 5)
    elif b - a <= 8:
        mults = (1,)
    else:
        decades = decades[::2]
        mults = (1,)
    out = [d * m for d in decades for m in mults]
    return [v for v in out if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]


def fit(values: list[float], *, allow_log: bool = True, pad: float = 0.04
        ) -> tuple[float, float, bool] | None:
    """(lo, hi, log) fitted to finite `values`, robust to spikes (OUTLIER_FACTOR);
    None when there is no finite value."""
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None
    lo, top = v[0], v[-1]
    p99 = v[min(len(v) - 1, int(0.99 * (len(v) - 1) + 0.5))]
    log = allow_log and lo > 0 and top / lo > LOG_RATIO
    if log:
        hi = min(top, p99 * OUTLIER_FACTOR)
        if hi <= lo:
            hi = lo * 10
        span = math.log10(hi / lo)
        return lo / 10 ** (span * pad), hi * 10 ** (span * pad), True
    hi = min(top, p99 + (p99 - lo) * (OUTLIER_FACTOR - 1))
    if hi <= lo:
        lo, hi = (lo - 0.5, hi + 0.5) if lo == 0 else (lo * 0.9, hi * 1.1)
        if lo > hi:
            lo, hi = hi, lo
    span = hi - lo
    lo = lo - span * pad if lo - span * pad > 0 or lo < 0 else max(lo - span * pad, 0.0)
    return lo, hi + span * pad, False


def fmt(v: float) -> str:
    """A short label for an axis value."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        mantissa, exp = f"{v:.0e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{v:.3g}"


def fmt_iteration(v: float) -> str:
    v = round(v)
    return f"{v / 1000:g}k" if abs(v) >= 10000 else str(v)


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
