"""An Evaluation: mAP (and per-class AP, P/R/F1) of one checkpoint on one dataset split.

What farm.eval computes, farm.store.evaluations keeps in Redis (as JSON: `to_dict`), and
the chart, the board, the CLI and sweeps read. Every field may be missing: a failed
evaluation has `error` and no mAP; darknet's `detector map` says nothing of detections;
`farm eval` outside a run has no run, iteration or host. `from_dict` reads any record the
farm ever wrote (unknown keys are kept in `extra` and written back as they were).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Evaluation:
    #: mAP at `iou_thresh` as a fraction; None: darknet printed -nan (no detections at
    #: all), or the evaluation failed (`error`)
    map: float | None = None
    error: str | None = None
    #: darknet-map | opencv-dnn | darknet-valid
    evaluator: str | None = None
    iou_thresh: float | None = None
    conf_thresh: float | None = None
    points: int | None = None
    #: per class: id, name, ap, tp, fp, truths, detections
    classes: tuple[dict[str, Any], ...] = ()
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    avg_iou: float | None = None
    detections: int | None = None
    truths: int | None = None
    note: str | None = None
    # what was evaluated, and how
    images: int | None = None
    tiled: bool | None = None
    clipped: bool | None = None
    weights: str | None = None
    cfg: str | None = None
    data: str | None = None
    valid: str | None = None
    seconds: float | None = None
    sha256: str | None = None
    # a screens evaluation (farm.eval.screens): the set, its tiles
    screens_id: str | None = None
    tile: tuple[int, int] | None = None
    overlap: int | None = None
    # a run's checkpoint (farm.eval.checkpoints.evaluate_run_checkpoint)
    run_id: str | None = None
    iteration: int | None = None
    attempt: int | None = None
    source: str | None = None
    worker: str | None = None
    host: str | None = None
    evaluated_at: float | None = None
    best_weights: str | None = None
    #: what ranked it, on the run's best only (farm.store.evaluations)
    score: float | None = None
    #: the same checkpoint scored on the run's screens set (a summary, or its error)
    screens: Evaluation | None = None
    #: in that summary: the screens set's obj.data (stored under `screens`, as written)
    screens_data: str | None = None
    #: keys this version does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def score_map(self) -> float | None:
        """The number that ranks it: the mAP, 0 for darknet's -nan (no detections), None
        for a failed evaluation."""
        if self.error:
            return None
        return 0.0 if self.map is None or not math.isfinite(self.map) else float(self.map)

    @property
    def screens_map(self) -> float | None:
        """The screens mAP beside the tile mAP, when the checkpoint was scored on screens."""
        return self.screens.map if self.screens else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as the farm has always stored it: the fields that are set (`map`
        always), the screens summary as a dict, then the unknown keys."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if name == "screens":
                value = value.to_dict() if value is not None else self.screens_data
            elif name == "classes":
                value = [dict(c) for c in value] if value else None
            elif name == "tile" and value is not None:
                value = list(value)
            if value is not None or name == "map":
                out[name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in d.items():
            if k not in _FIELDS:
                extra[k] = v
            elif k == "screens":
                if isinstance(v, dict):
                    values["screens"] = cls.from_dict(v)
                else:
                    values["screens_data"] = v
            elif k == "classes":
                values[k] = tuple(v or ())
            elif k == "tile":
                values[k] = tuple(v) if v is not None else None
            elif k == "iteration":
                values[k] = int(v) if v is not None else None
            else:
                values[k] = v
        return cls(**values, extra=extra)


_FIELDS = tuple(f.name for f in fields(Evaluation) if f.name not in ("extra", "screens_data"))
