"""Screens mAP: a checkpoint scored where the user's problem is, on full screenshots.

Tile mAP is a means. What the user needs is the × found in a real 1080×2400 screenshot;
the seed's detectors scored 65 % on their synthetic tiles and about 0 % there. A
screens set (farm.datasets.screens) holds labelled full screenshots; here each one goes
through tiled detection at the network's size (farm.eval.detect.detect_tiled: tiles
batched, boxes of overlapping tiles merged by farm.eval.nms, so a mark split over two
tiles, or a false positive in their overlap, counts once), and farm.eval.mapcalc scores
the merged boxes against the full-screen labels: the same AUC mAP@0.50 as `detector map`.

The tile overlap is at least the largest labelled mark (plus the cut margin on both
sides), so every mark lies whole in some tile.
"""
from __future__ import annotations

import math
import os
from dataclasses import fields, replace

from farm.datasets.screens import Screens, open_screens
from farm.errors import FarmError
from farm.eval import mapcalc
from farm.eval.detect import TILE_OVERLAP, load_cfg
from farm.eval.evaluate import evaluate_checkpoint
from farm.eval.evaluation import Evaluation
from farm.eval.nms import CUT_MARGIN

#: what an evaluation record keeps of a screens evaluation (the board, status, sweeps)
SUMMARY_KEYS = ("map", "precision", "recall", "f1", "tp", "fp", "fn", "avg_iou",
                "detections", "truths", "images", "seconds", "overlap", "tile", "screens_id",
                "evaluator", "error")


def evaluate_screens(weights: str | os.PathLike, *, screens: str | os.PathLike | Screens,
                     cfg: str | os.PathLike, dialect: str = "auto", darknet: str = "darknet",
                     tile: tuple[int, int] | None = None, overlap: int | None = None,
                     iou_thresh: float = mapcalc.IOU_THRESH,
                     conf_thresh: float = mapcalc.CONF_THRESH,
                     points: int = 0, detector=None) -> Evaluation:
    """mAP@iou_thresh (and P/R/F1 at conf_thresh) of `weights` on a screens set, found by
    tiled detection over each whole screenshot. The result has evaluate_checkpoint's
    shape plus `screens_id`, `tile` and `overlap`. `detector`: a loaded network (else
    the process's shared one for cfg and weights)."""
    s = screens if isinstance(screens, Screens) else open_screens(screens)
    net = load_cfg(cfg)
    tw, th = tile or (int(net.width or 0), int(net.height or 0))
    if overlap is None:
        overlap = default_overlap(s, (tw, th))
    result = evaluate_checkpoint(weights, data=s.obj_data, cfg=cfg, evaluator="opencv",
                                 darknet=darknet, dialect=dialect, points=points,
                                 iou_thresh=iou_thresh, conf_thresh=conf_thresh, tiled=True,
                                 tile=(tw, th), overlap=overlap, detector=detector)
    return replace(result, screens_id=s.id, tile=(tw, th), overlap=overlap)


def default_overlap(screens: Screens, tile: tuple[int, int]) -> int:
    """The detector's default overlap, raised to hold the largest labelled mark whole
    (and kept below the tile's size)."""
    q = screens.manifest["screens"].get("long_side_px") or {}
    need = math.ceil(q.get("max", 0) + 2 * CUT_MARGIN)
    base = min(TILE_OVERLAP, min(tile) // 2)
    return max(base, min(need, min(tile) - 1))


def screens_record(weights: str | os.PathLike, screens: str, cfg: str | os.PathLike, *,
                   dialect: str = "auto", darknet: str = "darknet") -> Evaluation:
    """What a checkpoint's evaluation record holds of its screens evaluation: the summary,
    or the error that prevented it (a screens evaluation that fails never stops the tile
    evaluation from being recorded)."""
    try:
        result = evaluate_screens(weights, screens=screens, cfg=cfg, dialect=dialect,
                                  darknet=darknet)
    except FarmError as e:
        return Evaluation(error=str(e), screens_data=screens)
    return Evaluation(**{f.name: getattr(result, f.name) for f in fields(Evaluation)
                         if f.name in SUMMARY_KEYS}, screens_data=screens)
