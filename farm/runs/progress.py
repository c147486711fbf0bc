"""Training progress as people read it: speed, time left, and the one-line summary.

Pure functions of what the farm already records (the wall-clock stamp of every metrics
entry, the run's attempts and evaluations), so `farm train --wait`, `farm runs`, the
training task's Flower events and the sweep follower all compute one ETA one way.

Speed is measured on the wall clock, not from darknet's own "N seconds" per iteration:
that figure leaves out data loading and checkpoint writes, and the ETA is a wall-clock
promise. Only the current attempt counts (a restart starts from a checkpoint, and the
time darknet spent diverging says nothing about the next attempt's speed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from farm.eval.evaluation import Evaluation

#: Seconds of the newest samples the speed is measured over: long enough to smooth
#: darknet's uneven iterations (loading, checkpoint writes), short enough to follow a
#: change (a second run landing on the same GPU).
RATE_WINDOW = 120.0

#: A speed is stale (no ETA) when the newest sample is older than this many expected
#: iteration times (and older than RATE_WINDOW): darknet has stopped printing.
STALE_ITERATIONS = 3.0


def rate(samples: Iterable[tuple[float, int]], window: float = RATE_WINDOW) -> float | None:
    """Iterations per second from (wall time, iteration) samples of one attempt.

    The farm stamps a whole batch of iterations with the time it flushed them, so each
    time counts once, with the highest iteration done by then. None without two times."""
    done: dict[float, int] = {}
    for t, i in samples:
        done[t] = max(i, done.get(t, i))
    points = sorted(done.items())
    if len(points) < 2:
        return None
    newest = points[-1][0]
    recent = [p for p in points if p[0] >= newest - window]
    if len(recent) < 2:  # slower than one flush per window: the two newest
        recent = points[-2:]
    (t0, i0), (t1, i1) = recent[0], recent[-1]
    if t1 <= t0 or i1 <= i0:
        return None
    return (i1 - i0) / (t1 - t0)


def is_stale(newest: float | None, speed: float | None, now: float,
             window: float = RATE_WINDOW) -> bool:
    """No sample for longer than the window and a few iterations' time."""
    if newest is None or speed is None:
        return True
    return now - newest > max(window, STALE_ITERATIONS / speed)


def eta(iteration: int, max_batches: int, speed: float | None) -> float | None:
    """Seconds until max_batches at `speed`; 0 once there, None without a speed."""
    if iteration >= max_batches:
        return 0.0
    if not speed or speed <= 0:
        return None
    return (max_batches - iteration) / speed


def sweep_eta(running: Sequence[float | None], pending: int, concurrency: int,
              trial_seconds: float | None) -> float | None:
    """Seconds until a sweep's last trial ends: the running trials' ETAs, then each
    pending trial (`trial_seconds` long) on whichever GPU frees first. None when a
    running trial has no ETA yet, or trials are pending and no trial length is known.
    Early stopping can only make it shorter."""
    if any(e is None for e in running):
        return None
    if pending and not trial_seconds:
        return None
    lanes = sorted(list(running) + [0.0] * max(concurrency - len(running), 0))
    if not lanes:
        lanes = [0.0]
    for _ in range(pending):
        lanes[0] += trial_seconds or 0.0
        lanes.sort()
    return max(lanes)


def format_duration(seconds: float | None) -> str:
    """45s, 2m05s, 1h02m, 3d04h; "-" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_rate(speed: float | None) -> str:
    """12.3 it/s, or 4.5 s/it below one iteration per second; "-" when unknown."""
    if not speed or speed <= 0:
        return "-"
    return f"{speed:.3g} it/s" if speed >= 1 else f"{1 / speed:.3g} s/it"


def format_map(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def format_loss(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Progress:
    """One run at one moment, as the live line and `farm runs` show it."""

    iteration: int
    max_batches: int
    speed: float | None = None          # iterations per second (current attempt)
    avg_loss: float | None = None
    last_map: float | None = None       # mAP@0.50 (fraction) of the newest evaluation
    last_map_iteration: int | None = None
    restarts: int = 0
    attempt: int = 0

    @property
    def eta(self) -> float | None:
        return eta(self.iteration, self.max_batches, self.speed)

    def line(self, with_map: bool = True) -> str:
        """iteration 340/600 (57 %), 12.1 it/s, ETA 21s, avg loss 1.234, mAP 45.67 % @300,
        restarts 1 (`with_map` False: without the mAP, for who does not read it)"""
        pct = f" ({100 * self.iteration // self.max_batches} %)" if self.max_batches else ""
        parts = [f"iteration {self.iteration}/{self.max_batches}{pct}",
                 format_rate(self.speed), f"ETA {format_duration(self.eta)}",
                 f"avg loss {format_loss(self.avg_loss)}"]
        if with_map:
            parts.append(f"mAP {format_map(self.last_map)} @{self.last_map_iteration}"
                         if self.last_map is not None else "mAP -")
        parts.append(f"restarts {self.restarts}")
        return ", ".join(parts)


def short(p: Progress) -> str:
    """340/600 13 it/s ETA 20s loss 1.234 mAP 45.67 % r1: one of several on a line."""
    text = (f"{p.iteration}/{p.max_batches} {format_rate(p.speed)} ETA "
            f"{format_duration(p.eta)} loss {format_loss(p.avg_loss)}")
    if p.last_map is not None:
        text += f" mAP {format_map(p.last_map)}"
    return text + f" r{p.restarts}"


def samples_of(entries: Iterable[tuple[str, Mapping[str, str]]], attempt: int
               ) -> list[tuple[float, int]]:
    """(wall time, iteration) of metrics stream entries (ProgressStore.recent_metrics) that
    belong to `attempt`; entries written before the farm stamped times are skipped."""
    out = []
    for _, m in entries:
        if m.get("a") == str(attempt) and m.get("t"):
            out.append((float(m["t"]), int(m["i"])))
    return out


def measure(*, iteration: int, max_batches: int, attempts: int, live: Mapping[str, str],
            recent: Iterable[tuple[str, Mapping[str, str]]],
            evaluations: Sequence[Evaluation], now: float, running: bool = True) -> Progress:
    """The Progress of a run from what Redis holds: its live hash, its newest metrics
    entries and its evaluations. `running` False: no speed (a queued or ended run)."""
    attempt = int(live.get("attempt") or attempts or 0)
    samples = samples_of(recent, attempt) if running else []
    speed = rate(samples)
    if running and is_stale(max((t for t, _ in samples), default=None), speed, now):
        speed = None
    avg = live.get("avg_loss")
    scored = [e for e in evaluations if e.map is not None and not e.error]
    last = max(scored, key=lambda e: int(e.iteration), default=None)
    return Progress(iteration=int(live.get("iteration") or iteration), max_batches=max_batches,
                    speed=speed, avg_loss=float(avg) if avg not in (None, "") else None,
                    last_map=float(last.map) if last else None,
                    last_map_iteration=int(last.iteration) if last else None,
                    restarts=max(attempts - 1, 0), attempt=attempt)
