"""Watch one darknet attempt to its end and say how it ended.

The watchdog darknet lacks: it stops darknet at the first non-finite avg loss (or a loss
above the bound after burn-in), at the first allocation failure or refusal it prints,
notices stalls, cancellation and a lost lease, records metrics and checkpoints as they
appear, and judges the outcome from the log and the files, never from the exit code alone
(pjreddie exits 0 on a missing file, hank-ai 134 on Ctrl-C, AlexeyAB may abort after
writing its final weights). A SIGKILL the farm did not send, while the kernel's OOM-kill
counter moved, is out of memory.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from farm.darknet.events import (CheckpointSaved, DarknetError, ErrorKind, Iteration,
                                 MapResult)
from farm.darknet.logparse import LogParser
from farm.darknet.process import DarknetProcess
from farm.runs.model import Attempt, Checkpoint, Outcome, Run
from farm.runs.policy import Policy
from farm.runs.retention import Retention, checkpoint_waste, remove

#: How often Redis hears about new iterations and log lines (one pipelined round trip).
FLUSH_INTERVAL = 0.5


def oom_kill_counts(cgroup_root: str = "/sys/fs/cgroup") -> tuple[int, ...]:
    """The kernel's OOM-kill counters this process can read: /proc/vmstat's (every kill on
    the machine) and its memory cgroup's (v2 memory.events, v1 memory.oom_control), which
    also count kills by a container's own memory limit. -1 where one is unreadable."""
    counts = [_counter("/proc/vmstat")]
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            counts.append(_counter(f"{cgroup_root}{path.rstrip('/')}/memory.events"))
        elif "memory" in controllers.split(","):
            counts.append(_counter(f"{cgroup_root}/memory{path.rstrip('/')}/memory.oom_control"))
    return tuple(counts)


def _counter(path: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return -1


def _moved(before: Iterable[int], after: Iterable[int]) -> bool:
    return any(b >= 0 and a > b for b, a in zip(before, after))


class ProgressSink(Protocol):
    """Where the supervisor writes what darknet prints (farm.store.progress.ProgressStore;
    a test may keep it in memory)."""

    def record(self, run_id: str, attempt: int, iterations: list[Iteration],
               lines: list[str], now: float) -> None: ...

    def record_map(self, run_id: str, result: dict[str, Any]) -> None: ...


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
    progress: ProgressSink
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
    #: the kernel's OOM-kill counters (oom_kill_counts; a test may replay its own)
    oom_kills: Callable[[], tuple[int, ...]] = oom_kill_counts
    #: what the farm keeps of darknet's files (farm.runs.retention)
    retention: Retention = field(default_factory=Retention)
    #: why a weights file darknet wrote is not complete (None: it is), e.g. cut short by
    #: a full disk or a kill; such a file never becomes a checkpoint
    weights_problem: Callable[[str], str | None] = lambda path: None
    #: why the disk is too full for darknet's next weights (farm.runs.disk), or None;
    #: asked every `space_every` seconds while darknet trains
    space: Callable[[], str | None] = lambda: None
    space_every: float = 2.0
    _verdict: _Verdict | None = None
    _pending: _Pending | None = None
    _finite: bool = True
    _errors: list[DarknetError] = field(default_factory=list)
    _final_saved: bool = False
    _final_cut: str | None = None  # why darknet's final weights are not complete
    _oom_before: tuple[int, ...] = ()
    _space_at: float | None = None
    _notes: list[str] = field(default_factory=list)  # the farm's own lines for the log

    def supervise(self) -> Attempt:
        parser = LogParser()
        a = self.attempt
        self._oom_before = self.oom_kills()
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
            self._flush([], [])
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
            self.progress.record_map(self.run.id, {"attempt": a.number,
                                                   "iteration": ev.iteration or a.last_iteration,
                                                   "map": ev.map, "iou_thresh": ev.iou_thresh})
        elif isinstance(ev, DarknetError):
            self._errors.append(ev)
            if ev.is_bad_input and self._verdict is None:
                self._verdict = _Verdict(Outcome.BAD_INPUT, _describe(ev))
            elif ev.kind is ErrorKind.OUT_OF_MEMORY and self._verdict is None:
                self._verdict = _Verdict(Outcome.OUT_OF_MEMORY, _describe(ev))

    def _check_outside(self, now: float, last_iter_at: float) -> None:
        outside = self.interrupt()
        if outside is not None:
            self._verdict = _Verdict(outside, f"{outside.value} while training")
        elif (short := self._space_short(now)) is not None:
            self._verdict = _Verdict(Outcome.NO_SPACE, f"stopped before darknet's next "
                                                       f"weights: {short}")
        elif now - last_iter_at > self.limits.policy.stall_timeout:
            self._verdict = _Verdict(
                Outcome.STALLED,
                f"no iteration for {self.limits.policy.stall_timeout:g} s")

    def _space_short(self, now: float) -> str | None:
        if self._space_at is not None and now - self._space_at < self.space_every:
            return None
        self._space_at = now
        return self.space()

    def _flush(self, iters: list[Iteration], lines: list[str]) -> None:
        lines, self._notes = lines + self._notes, []
        if iters or lines:
            self.progress.record(self.run.id, self.attempt.number, iters, lines,
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
            if self.retention.on:
                os.remove(p.source)
            return
        trained = a.last_iteration is not None or a.start_weights != self.run.weights
        keep = p.finite and p.iteration > 0 and trained
        dest = Path(self.checkpoints_dir) / f"iter-{p.iteration:07d}.weights"
        if keep:
            problem = self.weights_problem(p.source)
            if problem is not None:  # darknet never says so: a full disk, a kill
                self._notes.append(f"--- farm: {p.source} is not complete ({problem}); "
                                   f"not taken as a checkpoint ---")
                if p.source.endswith("_final.weights"):
                    self._final_saved, self._final_cut = False, problem
                return
            self.retention.take(p.source, dest)
            self.run.good_checkpoint = str(dest)
        checkpoint = Checkpoint(iteration=p.iteration, path=str(dest) if keep else p.source,
                                source=p.source, finite=p.finite, attempt=a.number,
                                saved_at=time.time())
        self.run.checkpoints.append(checkpoint)
        if keep:  # older copies go (keep_checkpoints); pinned ones are hard links
            remove(checkpoint_waste(self.run, Path(self.checkpoints_dir),
                                    self.retention.keep_checkpoints))
        self.on_checkpoint(self.run, checkpoint)

    # -- outcome ----------------------------------------------------------------------
    def _judge(self) -> None:
        a = self.attempt
        if self._verdict is not None:
            a.outcome, a.message = self._verdict.outcome, self._verdict.message
            return
        if a.last_iteration is None and self._final_saved and \
                a.start_iteration >= self.limits.max_batches:
            self._judge_nothing_trained()
            return
        finished = self._final_saved and (a.last_iteration or 0) >= self.limits.max_batches
        if finished and self._finite:
            a.outcome = Outcome.COMPLETED
            a.message = f"final weights at iteration {a.last_iteration}"
            if a.exit_code:
                a.message += f" (darknet then exited {a.exit_code}; the weights were written)"
            return
        fatal = next((e for e in self._errors if e.kind is not ErrorKind.CANNOT_LOAD_IMAGE), None)
        short = self.space()
        if short is not None:  # darknet does not say why a write failed; the disk does
            a.outcome = Outcome.NO_SPACE
            a.message = (f"darknet ended (exit {a.exit_code}) at iteration "
                         f"{a.last_iteration} with too little disk: {short}")
            return
        if a.exit_code == -signal.SIGKILL and _moved(self._oom_before, self.oom_kills()):
            a.outcome = Outcome.OUT_OF_MEMORY
            a.message = (f"darknet killed by the kernel's OOM killer (SIGKILL at iteration "
                         f"{a.last_iteration}; the kernel's oom_kill counter moved)")
            return
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
        elif self._final_cut:
            a.message = (f"darknet's final weights at iteration {a.last_iteration} are not "
                         f"complete: {self._final_cut} (exit {a.exit_code})")
        else:
            a.message = (f"darknet exited {a.exit_code} at iteration {a.last_iteration} "
                         f"without writing final weights")

    def _judge_nothing_trained(self) -> None:
        """darknet resumed at or past max_batches and wrote its final weights at once. From
        a farm checkpoint the run was already done; from the start weights it is their
        header (`seen`) that says so: a damaged file, or the weights of a finished
        training (darknet.md §4), whatever darknet's exit code."""
        a = self.attempt
        if a.start_weights and a.start_weights != self.run.weights:
            a.outcome, a.last_iteration = Outcome.COMPLETED, a.start_iteration
            a.message = f"final weights at iteration {a.start_iteration} (resumed there)"
            return
        a.outcome = Outcome.BAD_INPUT
        a.message = (f"darknet trained nothing: the start weights {a.start_weights} say "
                     f"iteration {a.start_iteration} (their `seen` / batch), at or past "
                     f"max_batches {self.limits.max_batches}, so darknet resumed there and "
                     f"wrote its final weights at once (exit {a.exit_code}). A damaged file, "
                     f"or the weights of a finished training: start from weights with "
                     f"seen=0 (a .conv file) or raise max_batches")


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
