"""A run's life: `move` is the one place a run's state changes.

    queued ──> running ──> completed | failed | cancelled

A run not yet finished may go back to queued (its worker waits for disk space, the
reaper found its worker gone) or end from queued (cancelled before it started, given
up on when its last attempt had already ended).

An attempt whose worker vanished ends `lost` here too (`lose`), said by whoever saw it:
the reaper (the process is gone, or its lease expired) or the next worker to take it.

Whoever changes a run (farm.runs.service while it trains, farm.runs.reaper and the
run store's atomic requeue, farm.runs.cancel, farm.sweeps.service for trials) moves the
record it holds here and saves it. The guard: a finished run never changes again (it
is not set running, a cancelled run stays cancelled). `move` writes nothing itself, so
the store can call it inside a Redis transaction.
"""
from __future__ import annotations

import time
from typing import Final

from farm.errors import StateConflict
from farm.runs.model import Outcome, Run, RunState


class _Keep:
    """`worker` left as it is (the reaper keeps the lost worker's name for the message
    of the next attempt, farm.runs.service._recover)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


def move(run: Run, to: RunState, message: str | None = None, *,
         worker: str | None | _Keep = KEEP) -> Run:
    """Set `run`'s state to `to` (in memory; the caller saves it) and return it.

    `message` replaces the run's message when given; `worker` names the process that
    trains it (None: no one). A finished state stamps `ended_at`. StateConflict when
    the run has finished already: callers that may meet a finished run (cancel, the
    reaper) look first and leave it alone, as they always did."""
    if run.state.finished:
        raise StateConflict(f"run {run.id} is {run.state.value}: it cannot become "
                            f"{to.value}", hint="a finished run never changes again; "
                                                 "submit a new run instead")
    run.state = to
    if message is not None:
        run.message = message
    if not isinstance(worker, _Keep):
        run.worker = worker
    if to.finished:
        run.ended_at = time.time()
    return run


def lose(run: Run, why: str) -> Run:
    """End the run's open attempt as lost, saying `why` (its worker vanished); an attempt
    that already ended keeps its outcome."""
    last = run.current
    if last is not None and not last.finished:
        last.outcome, last.ended_at, last.message = Outcome.LOST, time.time(), why
    return run
