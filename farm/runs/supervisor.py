"""Watch one darknet attempt to its end and say how it ended.

The watchdog darknet lacks: it stops darknet at the first non-finite avg loss (or a loss
above the bound after burn-in), notices stalls, cancellation and a lost lease, records
metrics and checkpoints as they appear, and judges the outcome from the log and the
files, never from the exit code alone (pjreddie exits 0 on a missing file, hank-ai 134
on Ctrl-C, AlexeyAB may abort after writing its final weights).
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from farm.darknet.events import (CheckpointSaved, DarknetError, ErrorKind, Iteration,
                                 MapResult)
from farm.darknet.logparse import LogParser
from farm.darknet.process import DarknetProcess
from farm.runs.model import Attempt, Checkpoint, Outcome, Run
from farm.runs.policy import Policy

#: How often Redis hears about new iterations and log lines (one pipelined round trip).
FLUSH_INTERVAL = 0.5


@dataclass
class Limits:
    max_batches: int
    burn_in: int
    policy: Policy


@dataclass
class _Verdict:
    outcome: Outcome
    message: str


@dataclass
class _Pending:
    """A `Saving weights` line seen; the file is complete once darknet prints again."""

    source: str
    iteration: int
    finite: bool


@dataclass
class Supervisor:
    store: object            # farm.state.Store (duck-typed so tests can read it plainly)
    run: Run
    attempt: Attempt
    process: DarknetProcess
    limits: Limits
    checkpoints_dir: Path
    #: returns "cancelled" or "lost" when the attempt must stop for outside reasons
    interrupt: Callable[[], Outcome | None] = lambda: None
    on_progress: Callable[[Run, Iteration], None] = lambda run, it: None
    on_checkpoint: Callable[[Run, Checkpoint], None] = lambda run, checkpoint: None
    clock: Callable[[], float] = time.monotonic
    _verdict: _Verdict | None = None
    _pending: _Pending | None = None
    _finite: bool = True
    _errors: list[DarknetError] = field(default_factory=list)
    _final_saved: bool = False

    def supervise(self) -> Attempt:
        parser = LogParser()
        a = self.attempt
        log = open(a.log_path, "ab", buffering=0)  # on disk as it arrives: `tail -f` works
        last_flush = last_iter_at = self.clock()
        iters: list[Iteration] = []
        lines: list[str] = []
        partial = b""
        try:
            while True:
                chunk = self.process.read(timeout=0.2)
                now = self.clock()
                if chunk:
                    log.write(chunk)
                    partial, new_lines = _split_lines(partial + chunk)
                    lines += new_lines
                    for ev in parser.feed(chunk):
                        if isinstance(ev, Iteration):
                            last_iter_at = now
                            iters.append(ev)
                        self._handle(ev)
                        if self._verdict:
                            break
                if self._verdict is None:
                    self._check_outside(now, last_iter_at)
                if self._verdict is not None:
                    self.process.kill(signal.SIGKILL)
                if chunk is None or self._verdict is not None or now - last_flush >= FLUSH_INTERVAL:
                    self._flush(iters, lines)
                    iters, lines, last_flush = [], [], now
                if chunk is None or self._verdict is not None:
                    break
            for ev in parser.close():
                self._handle(ev)
            a.exit_code = self.process.wait()
            self._finalize_pending()
        finally:
            log.close()
            if self.process.poll() is None:
                self.process.kill(signal.SIGKILL)
                self.process.wait()
        self._judge()
        a.ended_at = time.time()
        return a

    # -- events -----------------------------------------------------------------------
    def _handle(self, ev: object) -> None:
        a = self.attempt
        if isinstance(ev, Iteration):
            self._finalize_pending()
            a.last_iteration = ev.number
            diverged = not ev.finite or (ev.number > self.limits.burn_in
                                         and ev.loss > self.limits.policy.loss_bound)
            if diverged and self._finite:
                self._finite = False
                a.first_bad_iteration, a.first_bad_at = ev.number, time.time()
                what = "non-finite avg loss" if not ev.finite else \
                    f"loss {ev.loss:g} above the bound {self.limits.policy.loss_bound:g}"
                self._verdict = _Verdict(Outcome.DIVERGED,
                                         f"{what} at iteration {ev.number} "
                                         f"(loss {ev.loss}, avg {ev.avg_loss})")
            self.on_progress(self.run, ev)
        elif isinstance(ev, CheckpointSaved):
            self._finalize_pending()
            self._pending = _Pending(ev.path, a.last_iteration or a.start_iteration,
                                     self._finite)
            if ev.path.endswith("_final.weights"):
                self._final_saved = True
        elif isinstance(ev, MapResult):
            self.store.record_map(self.run.id, {"attempt": a.number,
                                                "iteration": ev.iteration or a.last_iteration,
                                                "map": ev.map, "iou_thresh": ev.iou_thresh})
        elif isinstance(ev, DarknetError):
            self._errors.append(ev)
            if ev.is_bad_input and self._verdict is None:
                self._verdict = _Verdict(Outcome.BAD_INPUT, _describe(ev))

    def _check_outside(self, now: float, last_iter_at: float) -> None:
        outside = self.interrupt()
        if outside is not None:
            self._verdict = _Verdict(outside, f"{outside.value} while training")
        elif now - last_iter_at > self.limits.policy.stall_timeout:
            self._verdict = _Verdict(
                Outcome.STALLED,
                f"no iteration for {self.limits.policy.stall_timeout:g} s")

    def _flush(self, iters: list[Iteration], lines: list[str]) -> None:
        if iters or lines:
            self.store.record_progress(self.run.id, self.attempt.number, iters, lines,
                                       time.time())

    # -- checkpoints ------------------------------------------------------------------
    def _finalize_pending(self) -> None:
        p, self._pending = self._pending, None
        if p is None or not os.path.exists(p.source):
            return
        a = self.attempt
        known = [c for c in self.run.checkpoints if c.iteration == p.iteration
                 and c.attempt == a.number]
        if known:  # `.backup` and `_100` are the same weights: keep one record
            return
        keep = p.finite and p.iteration > 0
        dest = Path(self.checkpoints_dir) / f"iter-{p.iteration:07d}.weights"
        if keep:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            shutil.copyfile(p.source, tmp)
            os.replace(tmp, dest)
            old = self.run.good_checkpoint
            self.run.good_checkpoint = str(dest)
            if old and old != str(dest) and os.path.exists(old):
                os.remove(old)  # keep the newest good one only; darknet's files stay
        checkpoint = Checkpoint(iteration=p.iteration, path=str(dest) if keep else p.source,
                                source=p.source, finite=p.finite, attempt=a.number,
                                saved_at=time.time())
        self.run.checkpoints.append(checkpoint)
        self.on_checkpoint(self.run, checkpoint)

    # -- outcome ----------------------------------------------------------------------
    def _judge(self) -> None:
        a = self.attempt
        if self._verdict is not None:
            a.outcome, a.message = self._verdict.outcome, self._verdict.message
            return
        finished = self._final_saved and (a.last_iteration or 0) >= self.limits.max_batches
        if finished and self._finite:
            a.outcome = Outcome.COMPLETED
            a.message = f"final weights at iteration {a.last_iteration}"
            if a.exit_code:
                a.message += f" (darknet then exited {a.exit_code}; the weights were written)"
            return
        fatal = next((e for e in self._errors if e.kind is not ErrorKind.CANNOT_LOAD_IMAGE), None)
        if a.exit_code is not None and a.exit_code < 0:
            sig = signal.Signals(-a.exit_code).name
            a.outcome = Outcome.CRASHED
            a.message = f"darknet killed by {sig}" + (f" after: {fatal.message}" if fatal else "")
            return
        a.outcome = Outcome.CRASHED
        if fatal:
            a.message = fatal.message
        elif self._final_saved:
            a.message = (f"darknet wrote final weights at iteration {a.last_iteration}, short "
                         f"of max_batches {self.limits.max_batches} (exit {a.exit_code})")
        else:
            a.message = (f"darknet exited {a.exit_code} at iteration {a.last_iteration} "
                         f"without writing final weights")


def _describe(ev: DarknetError) -> str:
    where = f" ({ev.path})" if ev.path and ev.path not in ev.message else ""
    return f"{ev.kind.value}: {ev.message}{where}"


def _split_lines(data: bytes) -> tuple[bytes, list[str]]:
    """Complete lines (split on \\r and \\n, empty ones dropped) and the unfinished rest."""
    cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
    if cut < 0:
        return data, []
    text = data[:cut].decode(errors="replace").replace("\r", "\n")
    return data[cut + 1:], [ln for ln in text.split("\n") if ln.strip()]
