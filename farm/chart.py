"""A run's training curves for its whole lineage: loss, avg loss, learning rate, mAP, restarts.

darknet draws `chart.png` for one process; a farm run is several attempts (restarts after
nan roll back to a checkpoint), so the farm draws its own from the metrics stream.

The stream holds one entry per iteration, and reading 50 000 of them from Redis takes
seconds, far too slow for a page. So the stream is *folded* once, incrementally, into at
most about 2 × TARGET buckets (each: attempt, iteration span, min/max of loss and avg
loss, the last avg loss and rate, how many values were not finite), kept in Redis as
`run:<id>:chart`; whoever looks (the board, `farm chart`) folds only what is new. When
there are too many buckets, neighbours of the same attempt merge pairwise, so min/max
survive downsampling and a restart is never blurred away.

The PNG is drawn with OpenCV and numpy (no plotting library).
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable

import cv2
import numpy as np

TARGET = 1000  # buckets to aim for; pairs merge once there are twice as many
TAIL = 30      # recent (time, iteration) samples kept for iterations per second

# Fields of a bucket (a list, to keep the JSON small).
A, FIRST, LAST, LMIN, LMAX, AMIN, AMAX, ALAST, RATE, BAD, COUNT, T = range(12)


def empty_state() -> dict[str, Any]:
    return {"v": 1, "last_id": "0-0", "n": 0, "size": 1, "buckets": [], "tail": []}


def _num(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _lo(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _hi(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def fold(state: dict[str, Any], entries: Iterable[tuple[str, dict[str, str]]], *,
         target: int = TARGET) -> dict[str, Any]:
    """Add metric stream entries (id, fields as Store.record_progress writes them)."""
    buckets, size, tail = state["buckets"], state["size"], state["tail"]
    for entry_id, f in entries:
        attempt, it = int(f["a"]), int(f["i"])
        loss, avg, rate = _num(f.get("loss")), _num(f.get("avg")), _num(f.get("rate"))
        t = _num(f.get("t")) or 0.0
        b = buckets[-1] if buckets else None
        if b is None or b[A] != attempt or b[COUNT] >= size:
            b = [attempt, it, it, None, None, None, None, None, None, 0, 0, t]
            buckets.append(b)
            if tail and tail[-1][2] != attempt:
                tail.clear()
        b[LAST], b[T] = it, t
        b[LMIN], b[LMAX] = _lo(b[LMIN], loss), _hi(b[LMAX], loss)
        b[AMIN], b[AMAX] = _lo(b[AMIN], avg), _hi(b[AMAX], avg)
        if avg is not None:
            b[ALAST] = avg
        if rate is not None:
            b[RATE] = rate
        b[BAD] += (loss is None) + (avg is None)
        b[COUNT] += 1
        tail.append([t, it, attempt])
        state["last_id"] = entry_id
        state["n"] += 1
        if len(buckets) > 2 * target:
            size *= 2
            buckets[:] = _merge_pairs(buckets)
    del tail[:-TAIL]
    state["size"] = size
    return state


def _merge_pairs(buckets: list[list]) -> list[list]:
    """Neighbouring buckets of one attempt merged two by two (never across a restart)."""
    out: list[list] = []
    i = 0
    while i < len(buckets):
        a = buckets[i]
        b = buckets[i + 1] if i + 1 < len(buckets) else None
        if b is None or b[A] != a[A]:
            out.append(a)
            i += 1
            continue
        out.append([a[A], a[FIRST], b[LAST], _lo(a[LMIN], b[LMIN]), _hi(a[LMAX], b[LMAX]),
                    _lo(a[AMIN], b[AMIN]), _hi(a[AMAX], b[AMAX]),
                    b[ALAST] if b[ALAST] is not None else a[ALAST],
                    b[RATE] if b[RATE] is not None else a[RATE], a[BAD] + b[BAD],
                    a[COUNT] + b[COUNT], b[T]])
        i += 2
    return out


def update_chart(store, run_id: str, *, max_entries: int | None = None,
                 chunk: int = 2000) -> dict[str, Any]:
    """Fold what the metrics stream gained since the last fold and save it. With
    `max_entries`, fold at most that many now (a page must not wait for a big backlog);
    the returned state's `behind` says how many are left."""
    state, length = store.chart_state(run_id)
    state = state or empty_state()
    todo = length - state["n"]
    if max_entries is not None:
        todo = min(todo, max_entries)
    changed = False
    while todo > 0:
        entries = store.metrics_after(run_id, state["last_id"], min(chunk, todo))
        if not entries:
            break
        fold(state, entries)
        todo -= len(entries)
        changed = True
    if changed:
        store.save_chart_state(run_id, state)
    state["behind"] = max(length - state["n"], 0)
    return state


def iterations_per_second(state: dict[str, Any] | None, now: float | None = None,
                          window: float = 60.0) -> float:
    """Recent training speed from the newest samples; 0 when nothing moved lately."""
    tail = (state or {}).get("tail") or []
    now = time.time() if now is None else now
    if len(tail) < 2 or now - tail[-1][0] > window:
        return 0.0
    (t0, i0, _), (t1, i1, _) = tail[0], tail[-1]
    return (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


# ---------------------------------------------------------------------------------------
# The picture

SIZE = (1200, 680)  # width, height
BG, GRID, AXIS = (255, 255, 255), (232, 232, 232), (90, 90, 90)
LOSS_BAND, AVG, RATE_LINE = (235, 206, 160), (160, 60, 0), (40, 150, 40)  # BGR
MAP_FARM, MAP_DARKNET, RESTART, NONFINITE = (30, 30, 220), (0, 140, 255), (0, 170, 230), \
    (40, 40, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def render_png(state: dict[str, Any] | None, *, evaluations: list[dict] = (),
               darknet_maps: list[dict] = (), attempts: list[dict] = (), title: str = "",
               size: tuple[int, int] = SIZE) -> bytes:
    """The chart as PNG bytes. `attempts`: dicts with number, reason and changes (as
    Attempt.to_dict gives them); their starts are marked on the curves."""
    ok, png = cv2.imencode(".png", render(state, evaluations=evaluations,
                                          darknet_maps=darknet_maps, attempts=attempts,
                                          title=title, size=size))
    return png.tobytes()


def render(state, *, evaluations=(), darknet_maps=(), attempts=(), title="", size=SIZE
           ) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), BG, np.uint8)
    _text(img, title or "training chart", (20, 30), 0.7, AXIS, 2)
    buckets = (state or {}).get("buckets") or []
    if not buckets:
        _text(img, "no iterations yet", (w // 2 - 110, h // 2), 0.8, AXIS, 2)
        return img
    main = _Frame(80, 60, w - 80, h - 170)    # loss and mAP
    strip = _Frame(80, h - 130, w - 80, h - 50)  # learning rate
    b = np.array([[np.nan if v is None else v for v in row] for row in buckets], float)
    points = [e for e in evaluations if e.get("map") is not None]
    x_lo = float(np.nanmin(b[:, FIRST]))
    x_hi = max(float(np.nanmax(b[:, LAST])), *(float(e["iteration"]) for e in points), x_lo + 1)
    for f in (main, strip):
        f.x_range(x_lo, x_hi)
    losses = b[:, [LMIN, LMAX, AMIN, AMAX]]
    finite = losses[np.isfinite(losses)]
    main.y_range(*(_loss_range(finite) if finite.size else (0.0, 1.0)))
    main.log = bool(finite.size) and finite.min() > 0 and finite.max() / finite.min() > 20
    strip.y_range(0.0, float(np.nanmax(b[:, RATE])) if np.isfinite(b[:, RATE]).any() else 1.0)
    main.grid(img, "loss (log)" if main.log else "loss")
    strip.grid(img, "learning rate", lines=2)
    _draw_loss(img, main, b)
    _draw_rate(img, strip, b)
    _draw_restarts(img, main, strip, b, attempts)
    _draw_maps(img, main, darknet_maps, MAP_DARKNET)
    _draw_maps(img, main, points, MAP_FARM)
    _legend(img, w)
    return img


def _loss_range(values: np.ndarray) -> tuple[float, float]:
    """Robust limits: the first iterations' huge losses must not flatten the rest."""
    lo, hi = float(values.min()), float(np.percentile(values, 99.5))
    return lo, hi if hi > lo else lo + 1.0


class _Frame:
    """A plot area in pixels and the data range it shows."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int):
        self.px = (x0, y0, x1, y1)
        self.log = False
        self.xs = self.ys = (0.0, 1.0)

    def x_range(self, lo, hi):
        self.xs = (lo, hi)

    def y_range(self, lo, hi):
        self.ys = (lo, hi if hi > lo else lo + 1.0)

    def x(self, v):
        x0, _, x1, _ = self.px
        lo, hi = self.xs
        return np.round(x0 + (np.asarray(v, float) - lo) / (hi - lo) * (x1 - x0)).astype(int)

    def y(self, v):
        _, y0, _, y1 = self.px
        lo, hi = self.ys
        v = np.asarray(v, float)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), np.log10(np.maximum(v, self.ys[0]))
        frac = np.clip((v - lo) / (hi - lo), 0, 1)
        return np.round(y1 - frac * (y1 - y0)).astype(int)

    def grid(self, img, label: str, lines: int = 5):
        x0, y0, x1, y1 = self.px
        for k in range(lines + 1):
            y = round(y0 + k * (y1 - y0) / lines)
            cv2.line(img, (x0, y), (x1, y), GRID, 1)
            lo, hi = self.ys
            value = hi - k * (hi - lo) / lines
            if self.log:
                llo, lhi = math.log10(lo), math.log10(hi)
                value = 10 ** (lhi - k * (lhi - llo) / lines)
            _text(img, f"{value:.3g}", (x0 - 70, y + 4), 0.4, AXIS)
        for k in range(6):
            x = round(x0 + k * (x1 - x0) / 5)
            cv2.line(img, (x, y0), (x, y1), GRID, 1)
            it = self.xs[0] + k * (self.xs[1] - self.xs[0]) / 5
            _text(img, f"{it:.0f}", (x - 15, y1 + 16), 0.4, AXIS)
        cv2.rectangle(img, (x0, y0), (x1, y1), AXIS, 1)
        _text(img, label, (x0 + 4, y0 - 6), 0.45, AXIS)


def _segments(b: np.ndarray):
    """Row ranges of consecutive buckets of one attempt."""
    starts = [0] + [k for k in range(1, len(b)) if b[k, A] != b[k - 1, A]] + [len(b)]
    return [(s, e) for s, e in zip(starts, starts[1:])]


def _draw_loss(img, f: _Frame, b: np.ndarray) -> None:
    mid = (b[:, FIRST] + b[:, LAST]) / 2
    xs = f.x(mid)
    ok = np.isfinite(b[:, LMIN]) & np.isfinite(b[:, LMAX])
    for x, lo, hi in zip(xs[ok], f.y(b[ok, LMIN]), f.y(b[ok, LMAX])):
        cv2.line(img, (int(x), int(lo)), (int(x), int(hi)), LOSS_BAND, 1)
    _lines(img, f, b, xs, ALAST, AVG)
    _, _, _, y1 = f.px
    for x in xs[b[:, BAD] > 0]:
        cv2.line(img, (int(x), y1 - 10), (int(x), y1), NONFINITE, 2)


def _draw_rate(img, f: _Frame, b: np.ndarray) -> None:
    _lines(img, f, b, f.x((b[:, FIRST] + b[:, LAST]) / 2), RATE, RATE_LINE)


def _lines(img, f: _Frame, b: np.ndarray, xs: np.ndarray, column: int, colour) -> None:
    """Column `column` of the buckets as one line per attempt, over its finite values."""
    for s, e in _segments(b):
        rows = np.arange(s, e)
        rows = rows[np.isfinite(b[rows, column])]
        if len(rows):
            pts = np.stack([xs[rows], f.y(b[rows, column])], axis=1).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)


def _draw_restarts(img, main: _Frame, strip: _Frame, b: np.ndarray, attempts) -> None:
    """A dashed line where each attempt after the first starts, with what changed."""
    about = {int(a["number"]): a for a in attempts}
    for s, _ in _segments(b)[1:]:
        number = int(b[s, A])
        x = int(main.x(b[s, FIRST]))
        for y0, y1 in ((main.px[1], main.px[3]), (strip.px[1], strip.px[3])):
            for y in range(y0, y1, 8):
                cv2.line(img, (x, y), (x, min(y + 4, y1)), RESTART, 2)
        a = about.get(number, {})
        changes = ", ".join(f"{k} {v[0]}->{v[1]}" for k, v in (a.get("changes") or {}).items())
        _text(img, f"attempt {number}" + (f": {changes}" if changes else ""),
              (x + 4, main.px[1] + 14 + 14 * (number % 3)), 0.4, RESTART)


def _draw_maps(img, f: _Frame, points, colour) -> None:
    if not points:
        return
    _, y0, _, y1 = f.px
    xy = [(int(f.x(float(p["iteration"]))), int(round(y1 - float(p["map"]) * (y1 - y0))))
          for p in sorted(points, key=lambda p: p["iteration"])]
    if len(xy) > 1:
        cv2.polylines(img, [np.array(xy, np.int32)], False, colour, 1, cv2.LINE_AA)
    for (x, y), p in zip(xy, sorted(points, key=lambda p: p["iteration"])):
        cv2.circle(img, (x, y), 5, colour, -1, cv2.LINE_AA)
        _text(img, f"{float(p['map']) * 100:.1f}%", (x - 18, y - 9), 0.4, colour)
    for k in range(6):  # the mAP axis on the right
        y = round(y0 + k * (y1 - y0) / 5)
        _text(img, f"{100 - 20 * k}%", (f.px[2] + 6, y + 4), 0.4, MAP_FARM)


def _legend(img, w: int) -> None:
    items = [("loss min-max", LOSS_BAND), ("avg loss", AVG), ("learning rate", RATE_LINE),
             ("mAP (farm)", MAP_FARM), ("mAP (darknet -map)", MAP_DARKNET),
             ("restart", RESTART), ("nan/inf", NONFINITE)]
    x, y = 330, 24
    for label, colour in items:
        width = cv2.getTextSize(label, _FONT, 0.42, 1)[0][0] + 40
        if x + width > w - 20:
            x, y = 330, y + 18
        cv2.rectangle(img, (x, y - 9), (x + 14, y + 1), colour, -1)
        _text(img, label, (x + 19, y), 0.42, AXIS)
        x += width


def _text(img, text: str, org, scale: float, colour, thickness: int = 1) -> None:
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, colour, thickness,
                cv2.LINE_AA)
