"""calc_anchors: anchors for the boxes a dataset holds, as darknet's calc_anchors finds
them."""
from __future__ import annotations

import numpy as np

from farm.darknet.cfg.make import require_int
from farm.errors import BadInput


def calc_anchors(box_sizes_px: np.ndarray, k: int, width: int, height: int,
                 seed: int = 0, max_iter: int = 300) -> list[tuple[int, int]]:
    """k anchors for boxes of these (w, h) sizes, as darknet's calc_anchors finds them.

    k-means on (w, h) with 1 − IoU as the distance (boxes compared as if they shared a
    corner) and k-means++ seeding, sorted by area. darknet seeds with the clock
    (srand(time(0))); here `seed` makes the result repeatable. `width`/`height` are the
    network size, used to clip the anchors to it.
    """
    boxes = np.asarray(box_sizes_px, dtype=float).reshape(-1, 2)
    boxes = boxes[np.all(np.isfinite(boxes), axis=1) & np.all(boxes > 0, axis=1)]
    require_int("k", k, minimum=1)
    if len(boxes) < k:
        raise BadInput(f"{len(boxes)} boxes are too few for {k} anchors",
                       hint="ask for fewer anchors or label more objects")
    rng = np.random.default_rng(seed)
    centers = _kmeanspp(boxes, k, rng)
    assign = None
    for _ in range(max_iter):
        new = np.argmax(_iou_wh(boxes, centers), axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = boxes[assign == j]
            if len(members):
                centers[j] = members.mean(axis=0)
    centers = centers[np.argsort(centers[:, 0] * centers[:, 1], kind="stable")]
    return [(int(min(max(round(w), 1), width)), int(min(max(round(h), 1), height)))
            for w, h in centers]


def _iou_wh(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    inter = (np.minimum(boxes[:, None, 0], centers[None, :, 0])
             * np.minimum(boxes[:, None, 1], centers[None, :, 1]))
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (centers[:, 0] * centers[:, 1])[None, :]
    return inter / (union - inter)


def _kmeanspp(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [boxes[rng.integers(len(boxes))]]
    for _ in range(1, k):
        dist = 1.0 - _iou_wh(boxes, np.array(centers)).max(axis=1)
        weights = dist ** 2
        total = weights.sum()
        pick = rng.integers(len(boxes)) if total <= 0 else rng.choice(len(boxes),
                                                                      p=weights / total)
        centers.append(boxes[pick])
    return np.array(centers, dtype=float)
