"""What the CLI shows of work in progress: the live line `--wait` redraws, evaluations
as they land, the wait for the last ones, and the summary a finished run ends with.

On a terminal the progress line is redrawn in place (\\r) and events (an attempt
starts, an evaluation lands) are printed above it. In a pipe or a log file there is no
\\r: events as they happen, and a progress line every PLAIN_EVERY seconds.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, Iterable, TextIO

from farm.eval.evaluation import Evaluation
from farm.runs.model import Outcome, Run, RunState
from farm.runs.progress import Progress, format_duration, format_map, measure

#: Seconds between two progress lines when the output is not a terminal.
PLAIN_EVERY = 30.0

#: Metric entries read to measure a run's speed (the newest ones; see progress.rate).
RECENT_METRICS = 300


class LiveOutput:
    """One live line on a terminal, plain periodic lines elsewhere (stderr by default)."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.clock = clock
        self.shown = ""          # the live line on screen (terminal)
        self.plain_at: float | None = None
        self.plain_text = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def event(self, text: str) -> None:
        """A line that stays: above the live line on a terminal."""
        if self.tty and self.shown:
            self._write("\r\x1b[K" + text + "\n" + self.shown)
        else:
            self._write(text + "\n")

    def progress(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns - 1
            text = text[:max(width, 20)]  # a wrapped line cannot be redrawn with \r
            if text != self.shown:
                self._write("\r\x1b[K" + text)
                self.shown = text
            return
        now = self.clock()
        due = self.plain_at is None or now - self.plain_at >= PLAIN_EVERY
        if due and text != self.plain_text:
            self._write(text + "\n")
            self.plain_at, self.plain_text = now, text

    def close(self) -> None:
        """End the live line (before the summary, or on Ctrl-C)."""
        if self.tty and self.shown:
            self._write("\n")
        self.shown = ""


def run_progress(store, run: Run, evaluations: list[dict] | None = None,
                 now: float | None = None) -> Progress:
    """The run's Progress from Redis: live hash, newest metrics, evaluations."""
    running = run.state is RunState.RUNNING
    return measure(iteration=run.last_iteration, max_batches=run.max_batches,
                   attempts=len(run.attempts), live=store.progress.live(run.id),
                   recent=store.progress.recent_metrics(run.id, RECENT_METRICS) if running else [],
                   evaluations=store.evaluations.all(run.id) if evaluations is None else evaluations,
                   now=time.time() if now is None else now, running=running)


def evaluation_line(e: Evaluation) -> str:
    """evaluation of iteration 100: mAP@0.50 45.67 % (P 0.80, R 0.75, F1 0.77; opencv-dnn)"""
    if e.error:
        return f"evaluation of iteration {e.iteration} failed: {e.error}"
    return f"evaluation of iteration {e.iteration}: mAP@0.50 {scores(e)}"


def scores(e: Evaluation) -> str:
    """45.67 % (P 0.80, R 0.75, F1 0.77; opencv-dnn)"""
    prf = ", ".join(f"{k} {_num(v)}" for k, v in
                    (("P", e.precision), ("R", e.recall), ("F1", e.f1)))
    return f"{format_map(e.map or 0.0)} ({prf}; {e.evaluator or '?'})"


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"


class EvaluationPrinter:
    """Prints each evaluation of the runs once, as it lands."""

    def __init__(self, out: LiveOutput, prefix: Callable[[str], str] = lambda run_id: ""):
        self.out, self.prefix = out, prefix
        self.seen: set[tuple[str, int]] = set()

    def show(self, run_id: str, evaluations: Iterable[Evaluation]) -> None:
        for e in evaluations:
            key = (run_id, int(e.iteration))
            if key not in self.seen:
                self.seen.add(key)
                self.out.event(self.prefix(run_id) + evaluation_line(e))


def await_evaluations(store, run_ids: list[str], *, listening: Callable[[], list[str]],
                      queue: str, timeout: float, out: LiveOutput,
                      printer: EvaluationPrinter | None = None, poll: float = 0.5
                      ) -> dict[str, set[int]]:
    """Wait until every evaluation sent for `run_ids` is recorded: the final checkpoint's
    is sent when the run ends. Not at all when no worker consumes `queue` (they stay
    queued); at most `timeout` seconds otherwise. Returns what is still missing."""
    pending = {r: p for r in run_ids if (p := store.evaluations.pending(r))}
    if not pending:
        return {}
    what = _iterations(pending)
    if not listening():
        out.event(f"no worker listens on {queue}: the evaluation of {what} stays queued "
                  f"(`farm status RUN` shows it once an eval worker is up)")
        return pending
    out.event(f"waiting for the evaluation of {what} (at most {format_duration(timeout)})")
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(poll)
        pending = {r: p for r in pending if (p := store.evaluations.pending(r))}
        if printer is not None:
            for r in run_ids:
                printer.show(r, store.evaluations.all(r))
    if pending:
        out.event(f"farm: warning: the evaluation of {_iterations(pending)} did not land "
                  f"within {format_duration(timeout)} (FARM_EVAL_WAIT); is the eval worker "
                  f"busy or down? `farm hosts workers`")
    return pending


def _iterations(pending: dict[str, set[int]]) -> str:
    many = len(pending) > 1
    parts = []
    for run_id, its in pending.items():
        listed = ", ".join(str(i) for i in sorted(its))
        word = "iterations" if len(its) > 1 else "iteration"
        parts.append(f"{run_id} {word} {listed}" if many else f"{word} {listed}")
    return "; ".join(parts)


def summary_lines(store, run: Run, here: str, missing: set[int] = frozenset()) -> list[str]:
    """How a run ended: state, best mAP and its iteration, where the best weights are,
    its attempts, and evaluations that never landed."""
    from farm.eval.checkpoints import best_weights_location
    lines = [f"{run.id}: {run.state.value}: {run.message}"]
    best = store.evaluations.best(run.id)
    if best and best.map is not None:
        lines.append(f"  best:      mAP@0.50 {scores(best)} at iteration {best.iteration}")
    else:
        lines.append("  best:      no evaluated checkpoint")
    if missing:
        lines.append("  missing:   evaluation of iteration "
                     + ", ".join(str(i) for i in sorted(missing)) + " (not recorded yet)")
    found = best_weights_location(store, run, here)
    if found is None:
        lines.append("  weights:   none (no checkpoint was written while the loss was finite)")
    else:
        host, path = found
        kind = "" if best and path == best.best_weights else " (newest good checkpoint)"
        lines.append(f"  weights:   {path}{kind} on {host or here}")
    lines.append(f"  attempts:  {len(run.attempts)}" + (f": {_outcomes(run)}" if run.attempts
                                                         else ""))
    started = run.attempts[0].started_at if run.attempts else None
    took = (run.ended_at or time.time()) - started if started else None
    lines.append(f"  trained:   {run.last_iteration}/{run.max_batches} iterations in "
                 f"{format_duration(took)}")
    return lines


def _outcomes(run: Run) -> str:
    counts: dict[str, int] = {}
    for a in run.attempts:
        key = a.outcome.value if a.outcome else "running"
        counts[key] = counts.get(key, 0) + 1
    order = [o.value for o in Outcome] + ["running"]
    return ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
