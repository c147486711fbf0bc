"""Cancelling a run, for `farm cancel` and for a sweep that is cancelled.

A run is cancelled through a flag in Redis: its worker reads it while darknet runs,
kills darknet's group and ends the run cancelled (farm.runs.service). A run that no
worker holds yet is ended here and now, so that it does not wait for a GPU to say so;
the flag is set first, so a worker that takes it a moment later ends it at once too.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable

from farm.runs.life import move
from farm.runs.model import Run, RunState
from farm.store import Store


class Cancel(str, Enum):
    """What asking to cancel a run did."""

    ENDED = "ended"                # it had finished already: nothing changed
    BEFORE_START = "before_start"  # queued, held by no worker: cancelled at once
    ASKED = "asked"                # its worker stops darknet and ends it cancelled


def cancel(store: Store, run: Run, message: str = "cancelled before it started", *,
           revoke: Callable[[str], object] | None = None) -> Cancel:
    """Cancel `run` (the record as the caller read it). `message` is the run's when it
    had not started; `revoke` withdraws its queued task (given the task id) before the
    run is marked, where the caller can reach the broker."""
    if run.state.finished:
        return Cancel.ENDED
    store.runs.request_cancel(run.id)
    if run.state is not RunState.QUEUED or store.runs.holder(run.id) is not None:
        return Cancel.ASKED
    if revoke is not None and run.task_id:
        revoke(run.task_id)
    store.runs.save(move(run, RunState.CANCELLED, message))
    return Cancel.BEFORE_START
