"""Which of a run's checkpoints are evaluated, and when they are sent.

The training task hands every checkpoint it records to `on_checkpoint`; a later attempt
calls `catch_up` for the checkpoints a worker that died never sent. Both send through
the caller's `send` (the Celery task enqueues on the `eval` queue) and remember what
was sent, so nothing goes twice.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from farm.errors import FarmError
from farm.runs.model import Checkpoint, Run
from farm.store import Store

log = logging.getLogger(__name__)

Send = Callable[[Run, Checkpoint], object]


def should_evaluate(iteration: int, max_batches: int, every: int, *,
                    last: int | None = None) -> bool:
    """Whether the checkpoint at `iteration` is due for evaluation.

    Always the final one (iteration >= max_batches); otherwise every `every` iterations.
    darknet writes checkpoints at its own cadence (every 100 iterations for `.backup` and
    `_last`; a resumed attempt from wherever it resumed), so a multiple of `every` may
    never be written: pass `last`, the iteration of the run's previous checkpoint (0 for
    the first one), and the first checkpoint past each multiple counts. Without `last`,
    only exact multiples do. `every` <= 0 evaluates the final checkpoint only.
    """
    if iteration <= 0:
        return False
    if iteration >= max_batches:
        return True
    if every <= 0:
        return False
    if last is None:
        return iteration % every == 0
    return iteration // every > max(last, 0) // every


def due(run: Run, checkpoint: Checkpoint) -> bool:
    """Whether `checkpoint` of `run` is due, at the run's `eval_every`, counted from the
    run's checkpoint before it."""
    previous = max((k.iteration for k in run.checkpoints
                    if k is not checkpoint and k.iteration < checkpoint.iteration), default=0)
    return should_evaluate(checkpoint.iteration, run.max_batches, run.eval_every,
                           last=previous)


def on_checkpoint(store: Store, run: Run, checkpoint: Checkpoint, send: Send) -> None:
    """Send a finite checkpoint's evaluation when it is due."""
    if checkpoint.finite and due(run, checkpoint):
        _send(store, run, checkpoint, send)


def catch_up(store: Store, run: Run, send: Send) -> None:
    """Send the evaluations due for checkpoints still on disk that were never sent (a
    worker that died between a checkpoint and its evaluation's message)."""
    try:
        sent = store.evaluations.sent(run.id) | {e.iteration
                                                 for e in store.evaluations.all(run.id)}
    except FarmError:
        return
    for c in run.checkpoints:
        if c.finite and c.iteration not in sent and due(run, c) and os.path.isfile(c.path):
            log.warning("run %s: evaluation of iteration %d was never sent; sending it now",
                        run.id, c.iteration)
            _send(store, run, c, send)


def _send(store: Store, run: Run, checkpoint: Checkpoint, send: Send) -> None:
    """Send a checkpoint's evaluation and remember it was sent; one that cannot be sent
    is logged and training carries on."""
    try:
        send(run, checkpoint)
        store.evaluations.mark_sent(run.id, checkpoint.iteration)
    except Exception:  # noqa: BLE001 - the broker's errors are many; training wins
        log.exception("could not queue the evaluation of %s", checkpoint.path)
