"""Evaluation: detections from a checkpoint, mAP as darknet computes it, the best weights.

`mapcalc` scores detections (AlexeyAB's definition), `detect` gets them (OpenCV's DNN
module, or darknet itself through `detector valid`), `evaluate` puts both together for one
checkpoint and one run. `should_evaluate` is the cadence the training task asks about.
"""
from __future__ import annotations


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
