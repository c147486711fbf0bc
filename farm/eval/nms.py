"""The farm's one non-maximum suppression, and how boxes from overlapping tiles merge.

Every box list the farm reduces goes through `nms` (darknet's do_nms_sort): a single
image's detections, the detections of each tile, and the merged boxes of a whole
screenshot. `merge_tiles` is the rule for a screenshot cut into overlapping tiles:

1. NMS within each tile (what darknet would report for that tile alone);
2. a box cut by a tile's inner edge is dropped where a whole box of the same class from
   any tile, about as confident, covers most of it: the same mark, seen whole by the
   neighbouring tile (tiles overlap by at least a mark, so one of them holds it whole);
3. NMS across the tiles: a mark (or a false positive) seen whole by two tiles in their
   overlap is one box.

Everything is vectorised: an undertrained network leaves tens of thousands of boxes above
darknet's 0.005 threshold on a screenshot's tiles.
"""
from __future__ import annotations

import numpy as np

NMS_THRESH = 0.45  # darknet's detector map / valid / test
#: px: a box this close to a tile's inner edge was cut by it
CUT_MARGIN = 2.0
#: overlap / smaller area above which a cut box duplicates a whole one
COVERED = 0.5
#: … provided the whole box has at least this share of the cut one's confidence
AS_CONFIDENT = 0.25


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float = NMS_THRESH, *,
        groups: np.ndarray | None = None) -> np.ndarray:
    """darknet's do_nms_sort: per class, best first, zero the score of every later box
    whose IoU with a kept one is above `thresh`. Returns the new scores.

    `boxes` are (N, 4) centre and size, `scores` (N, classes). With `groups` (N ints),
    only boxes of one group suppress each other (the tiles of a screenshot in one call).
    The overlapping pairs are found in vectorised blocks first; the greedy pass then only
    visits each box's few neighbours.
    """
    scores = scores.copy()
    n = len(boxes)
    if n == 0:
        return scores
    first, second = overlapping_pairs(boxes, thresh, groups=groups)
    for c in range(scores.shape[1]):
        s = scores[:, c]
        order = np.argsort(-s, kind="stable")
        order = order[s[order] > 0]
        rank = np.full(n, n, np.int64)
        rank[order] = np.arange(len(order))
        later = (rank[first] < rank[second]) & (rank[second] < n)
        a, b = first[later], second[later]
        if not len(a):
            continue
        by_a = np.argsort(a, kind="stable")
        a, b = a[by_a], b[by_a]
        starts = np.searchsorted(a, np.arange(n + 1))
        suppressed = np.zeros(n, bool)
        for i in order[np.isin(order, a)]:
            if not suppressed[i]:
                suppressed[b[starts[i]:starts[i + 1]]] = True
        s[suppressed] = 0
    return scores


def overlapping_pairs(boxes: np.ndarray, thresh: float, *, over: str = "union",
                      groups: np.ndarray | None = None, block: int = 1024
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), both orders, of boxes whose intersection over their union
    (`over="union"`: IoU) or over the smaller area (`over="smaller"`) is above `thresh`;
    with `groups`, only pairs within one group.

    A sweep along the longer side of the boxes' spread: with the boxes sorted by their
    leading edge, a box can only overlap the ones whose leading edge lies within its own
    extent, so only those pairs are measured. Groups are laid side by side along that
    axis, so boxes of two groups are never even candidates.
    """
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    area = boxes[:, 2] * boxes[:, 3]
    if np.ptp(y0) > np.ptp(x0):
        x0, y0, x1, y1 = y0, x0, y1, x1
    lead, tail = x0, x1
    if groups is not None:
        shift = groups * (float(x1.max() - x0.min()) + 1.0)
        lead, tail = x0 + shift, x1 + shift
    by_x = np.argsort(lead, kind="stable")
    ends = np.searchsorted(lead[by_x], tail[by_x], side="left")  # first leading edge past it
    firsts, seconds = [], []
    for start in range(0, len(boxes), block):
        pos = np.arange(start, min(start + block, len(boxes)))
        counts = np.maximum(ends[pos] - pos - 1, 0)
        if not counts.sum():
            continue
        a = np.repeat(pos, counts)
        b = a + 1 + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        i, j = by_x[a], by_x[b]
        iw = np.minimum(x1[i], x1[j]) - np.maximum(x0[i], x0[j])
        ih = np.minimum(y1[i], y1[j]) - np.maximum(y0[i], y0[j])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        base = area[i] + area[j] - inter if over == "union" else np.minimum(area[i], area[j])
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = inter / base > thresh
        firsts += [i[hit], j[hit]]
        seconds += [j[hit], i[hit]]
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def cut_by_inner_edge(boxes: np.ndarray, origins: np.ndarray, tile: tuple[int, int],
                      size: tuple[int, int]) -> np.ndarray:
    """Which boxes (image pixels) touch an edge of their tile (`origins`: each box's tile
    x, y) that is not an edge of the image (`size`: w, h)."""
    tx, ty = origins[:, 0], origins[:, 1]
    tw, th = tile
    w, h = size
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    m = CUT_MARGIN
    return (((tx > 0) & (x0 <= tx + m)) | ((ty > 0) & (y0 <= ty + m))
            | ((tx + tw < w) & (x1 >= tx + tw - m)) | ((ty + th < h) & (y1 >= ty + th - m)))


def drop_cut_duplicates(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Zero a cut box's class score where a whole box of that class, about as confident,
    mostly overlaps it (over the smaller area): the same mark, seen whole by the
    neighbouring tile. A cut box may be larger than the mark (the network guesses past the
    tile's edge) or smaller (half a mark). Returns the new scores."""
    scores = scores.copy()
    if not cut.any():
        return scores
    i, j = overlapping_pairs(boxes, COVERED, over="smaller")
    keep = cut[i] & ~cut[j]
    i, j = i[keep], j[keep]
    for c in range(scores.shape[1]):
        mine, theirs = scores[i, c], scores[j, c]
        hit = (mine > 0) & (theirs >= AS_CONFIDENT * mine)
        scores[i[hit], c] = 0
    return scores


def merge_tiles(boxes: np.ndarray, scores: np.ndarray, tiles: np.ndarray, cut: np.ndarray,
                thresh: float = NMS_THRESH) -> np.ndarray:
    """The scores left when the boxes of overlapping tiles become one screenshot's
    (module docstring). `tiles`: each box's tile number; `cut`: cut_by_inner_edge."""
    scores = nms(boxes, scores, thresh, groups=tiles)
    alive = np.nonzero(scores.max(axis=1) > 0)[0] if len(scores) else np.zeros(0, np.int64)
    kept = drop_cut_duplicates(boxes[alive], scores[alive], cut[alive])
    out = np.zeros_like(scores)
    out[alive] = nms(boxes[alive], kept, thresh)
    return out
