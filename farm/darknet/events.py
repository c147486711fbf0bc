"""Typed events read from darknet's output, the same for all three dialects.

The log parser (farm.darknet.logparse) turns raw bytes into these; the run supervisor
and the evaluators act on them and never look at darknet's text themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


@dataclass(slots=True)  # not frozen: one is built per iteration line, frozen costs ~20 % of parsing
class Iteration:
    """One training iteration line (`N: loss, avg loss, rate, seconds, images`)."""

    number: int
    loss: float
    avg_loss: float
    rate: float
    seconds: float | None  # compute time of this iteration; None where the dialect gives text
    images: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.avg_loss) and math.isfinite(self.loss)


@dataclass(frozen=True, slots=True)
class ClassAP:
    class_id: int
    name: str
    ap: float | None  # fraction in [0, 1]; None when darknet printed nan
    tp: int | None = None
    fp: int | None = None


@dataclass(frozen=True, slots=True)
class MapResult:
    """A mAP evaluation block (training `-map` or `detector map`).

    Values are fractions in [0, 1]; None where darknet printed nan (no detections).
    """

    iou_thresh: float
    map: float | None
    classes: tuple[ClassAP, ...] = ()
    conf_thresh: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    avg_iou: float | None = None  # fraction
    iteration: int | None = None  # training iteration it belongs to, when known


@dataclass(frozen=True, slots=True)
class MapSummary:
    """`Last accuracy mAP@0.50 = x %, best = y %` printed by AlexeyAB during training."""

    iou_thresh: float
    last: float | None  # fractions
    best: float | None


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    """`Saving weights to PATH` (the file may still be being written when this is read)."""

    path: str


class ErrorKind(str, Enum):
    CANNOT_LOAD_IMAGE = "cannot_load_image"
    WRONG_ANNOTATION = "wrong_annotation"
    MISSING_LABEL = "missing_label"
    MISSING_FILE = "missing_file"   # Couldn't open file: X
    CFG_ERROR = "cfg_error"         # filters/classes mismatch, unknown layer, bad cfg line
    OUT_OF_MEMORY = "out_of_memory"  # CUDA or host allocation failed (ENOMEM, bad_alloc)
    HEAP_ABORT = "heap_abort"       # glibc realloc()/free() corruption abort
    REFUSED = "refused"             # darknet's own refusal to go on (hank-ai's CPU prompt)
    FATAL = "fatal"                 # any other darknet error()/fatal banner


@dataclass(frozen=True, slots=True)
class DarknetError:
    kind: ErrorKind
    message: str
    path: str | None = None  # the file the message names, when it names one

    @property
    def is_bad_input(self) -> bool:
        """Errors that a retry cannot fix: the data or cfg must change."""
        return self.kind in (ErrorKind.MISSING_FILE, ErrorKind.CFG_ERROR,
                             ErrorKind.WRONG_ANNOTATION, ErrorKind.MISSING_LABEL,
                             ErrorKind.CANNOT_LOAD_IMAGE, ErrorKind.REFUSED)


Event = Iteration | MapResult | MapSummary | CheckpointSaved | DarknetError

__all__ = ["Iteration", "ClassAP", "MapResult", "MapSummary", "CheckpointSaved",
           "ErrorKind", "DarknetError", "Event"]
