"""A run's training curves for its whole lineage, folded small enough to draw at once.

darknet draws `chart.png` for one process; a farm run is several attempts (restarts after
nan roll back to a checkpoint), so the farm draws its own from the metrics stream
(farm.plot.runchart draws what is folded here).

The stream holds one entry per iteration, and reading 50 000 of them from Redis takes
seconds, far too slow for a page. So the stream is *folded* once, incrementally, into at
most about 2 × TARGET buckets (each: attempt, iteration span, min/max of loss and avg
loss, the last avg loss and rate, how many values were not finite), kept in Redis as
`run:<id>:chart`; whoever looks (the board, `farm chart`) folds only what is new. When
there are too many buckets, neighbours of the same attempt merge pairwise, so min/max
survive downsampling and a restart is never blurred away.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Protocol

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
    """Add metric stream entries (id, fields as ProgressStore.record writes them)."""
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


class ChartStream(Protocol):
    """What folding needs of the store: the fold kept so far, the stream after it
    (farm.store.progress.ProgressStore; a test may keep both in memory)."""

    def chart_state(self, run_id: str) -> tuple[dict[str, Any] | None, int]: ...

    def metrics_after(self, run_id: str, after: str, count: int
                      ) -> list[tuple[str, dict[str, str]]]: ...

    def save_chart_state(self, run_id: str, doc: dict[str, Any]) -> None: ...


def update_chart(stream: ChartStream, run_id: str, *, max_entries: int | None = None,
                 chunk: int = 2000) -> dict[str, Any]:
    """Fold what the metrics stream gained since the last fold and save it. With
    `max_entries`, fold at most that many now (a page must not wait for a big backlog);
    the returned state's `behind` says how many are left."""
    state, length = stream.chart_state(run_id)
    state = state or empty_state()
    todo = length - state["n"]
    if max_entries is not None:
        todo = min(todo, max_entries)
    changed = False
    while todo > 0:
        entries = stream.metrics_after(run_id, state["last_id"], min(chunk, todo))
        if not entries:
            break
        fold(state, entries)
        todo -= len(entries)
        changed = True
    if changed:
        stream.save_chart_state(run_id, state)
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
