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

An undertrained network leaves tens of thousands of boxes above darknet's 0.005 threshold
on a screenshot's tiles, so the work is kept to where it can matter: each tile's NMS runs
in OpenCV (NMSBoxes: the same greedy rule in C++); across tiles only pairs from two tiles
are measured, and of those only pairs with a box outside its tile's own part (the part
no other tile sees): two boxes each inside its own tile's part cannot meet.
"""
from __future__ import annotations

import cv2
import numpy as np

NMS_THRESH = 0.45  # darknet's detector map / valid / test
#: px: a box this close to a tile's inner edge was cut by it
CUT_MARGIN = 2.0
#: overlap / smaller area above which a cut box duplicates a whole one
COVERED = 0.5
#: … provided the whole box has at least this share of the cut one's confidence
AS_CONFIDENT = 0.25
#: boxes of one group up to which OpenCV's NMSBoxes (quadratic, in C++) does the greedy
#: pass; above it the sweep below, whose work grows with the overlaps only
OPENCV_NMS_MAX = 4000


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float = NMS_THRESH, *,
        groups: np.ndarray | None = None) -> np.ndarray:
    """darknet's do_nms_sort: per class, best first, zero the score of every later box
    whose IoU with a kept one is above `thresh`. Returns the new scores.

    `boxes` are (N, 4) centre and size, `scores` (N, classes). With `groups` (N ints),
    only boxes of one group suppress each other (the tiles of a screenshot in one call).
    Among equal scores the earlier box wins (a stable order), in both engines.
    """
    scores = scores.copy()
    if len(boxes) == 0:
        return scores
    if groups is None:
        members = [np.arange(len(boxes))]
    else:
        order = np.argsort(groups, kind="stable")
        members = np.split(order, np.nonzero(np.diff(groups[order]))[0] + 1)
    rects = np.column_stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                             boxes[:, 2], boxes[:, 3]]).astype(np.float64)
    for idx in members:
        if len(idx) > OPENCV_NMS_MAX:
            first, second = overlapping_pairs(boxes[idx], thresh)
            scores[idx] = greedy(scores[idx], first, second)
            continue
        for c in range(scores.shape[1]):
            alive = idx[scores[idx, c] > 0]
            if len(alive) < 2:
                continue
            keep = cv2.dnn.NMSBoxes(rects[alive], scores[alive, c].astype(np.float32), 0.0,
                                    thresh)
            dropped = np.ones(len(alive), bool)
            dropped[np.asarray(keep, np.int64).reshape(-1)] = False
            scores[alive[dropped], c] = 0
    return scores


def greedy(scores: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The greedy pass of NMS given the pairs (both orders) that overlap too much: per
    class, best first, a box still alive zeroes its later partners. New scores."""
    scores = scores.copy()
    n = len(scores)
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
                      query: np.ndarray | None = None, block: int = 1 << 16
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of boxes whose intersection over their union (`over="union"`:
    IoU) or over the smaller area (`over="smaller"`) is above `thresh`: both orders, or
    with `query` (a mask) the pairs with i a query box (both orders when j is one too).

    Only pairs that can meet are measured. The boxes are cut into bands across the longer
    side of their spread (BAND_FACTOR times their median extent there; a box joins every
    band it touches, a pair belongs to the band where their intersection begins), and in
    each band a sweep: two boxes overlap only if one's leading edge lies within the
    other's extent, so each box meets the boxes that start within it and (with `query`)
    those it starts within. A screenshot's 100 000 boxes cost seconds, not hours.
    """
    n = len(boxes)
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if np.ptp(x0) > np.ptp(y0):  # bands across the longer spread, the sweep along them
        x0, y0, x1, y1 = y0, x0, y1, x1
    band = max(BAND_FACTOR * float(np.median(y1 - y0)), 1.0)
    first = np.floor((y0 - y0.min()) / band).astype(np.int64)
    last = np.maximum(np.ceil((y1 - y0.min()) / band).astype(np.int64) - 1, first)
    members, bands = _expand(np.arange(n), first, last + 1, np.arange(last.max() + 1))
    order = np.argsort(bands, kind="stable")
    members, bands = members[order], bands[order]
    cuts = np.nonzero(np.diff(bands))[0] + 1
    area = boxes[:, 2] * boxes[:, 3]
    out_i, out_j = [], []
    for idx, b in zip(np.split(members, cuts), bands[np.r_[0, cuts]]):
        i, j = _sweep(idx, x0, x1, None if query is None else query[idx])
        for k in range(0, len(i), block):
            a, c = i[k:k + block], j[k:k + block]
            top = np.maximum(y0[a], y0[c])
            iw = np.minimum(x1[a], x1[c]) - np.maximum(x0[a], x0[c])
            ih = np.minimum(y1[a], y1[c]) - top
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
            base = area[a] + area[c] - inter if over == "union" else \
                np.minimum(area[a], area[c])
            with np.errstate(divide="ignore", invalid="ignore"):
                hit = (inter / base > thresh) & \
                    (np.floor((top - y0.min()) / band).astype(np.int64) == b)
            out_i.append(a[hit])
            out_j.append(c[hit])
    i = np.concatenate(out_i) if out_i else np.zeros(0, np.int64)
    j = np.concatenate(out_j) if out_j else np.zeros(0, np.int64)
    if query is None:  # each pair was found once, from the box that starts first
        i, j = np.concatenate([i, j]), np.concatenate([j, i])
    return i, j


#: bands of overlapping_pairs, in median box extents
BAND_FACTOR = 4


def _sweep(idx: np.ndarray, x0: np.ndarray, x1: np.ndarray, query: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs among boxes `idx` (global indices) that overlap along x: each
    unordered pair once; with `query` (over idx), the pairs with a query box, it first."""
    by = idx[np.argsort(x0[idx], kind="stable")]
    lead = x0[by]
    if query is None:  # the boxes after each one (in lead order) that start within it
        ends = np.searchsorted(lead, x1[by], side="left")
        return _expand(by, np.arange(1, len(by) + 1), ends, by)
    queries = idx[query]
    # boxes starting within a query box q: lead_q <= lead_j < tail_q
    i, j = _expand(queries, np.searchsorted(lead, x0[queries], side="left"),
                   np.searchsorted(lead, x1[queries], side="left"), by)
    # and query boxes starting within a box j: lead_j < lead_q < tail_j
    if len(queries):
        q_by = queries[np.argsort(x0[queries], kind="stable")]
        q_lead = x0[q_by]
        jj, ii = _expand(by, np.searchsorted(q_lead, lead, side="right"),
                         np.searchsorted(q_lead, x1[by], side="left"), q_by)
        i, j = np.concatenate([i, ii]), np.concatenate([j, jj])
    keep = i != j
    return i[keep], j[keep]


def _expand(owners: np.ndarray, starts: np.ndarray, ends: np.ndarray, table: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(owner, table[k]) for every k in [start, end) of each owner."""
    counts = np.maximum(ends - starts, 0)
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.repeat(owners, counts), table[offsets + np.arange(total)]


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


def own_part(boxes: np.ndarray, origins: np.ndarray, xs: list[int], ys: list[int],
             tile: tuple[int, int]) -> np.ndarray:
    """Which boxes lie wholly inside the part of their tile that no other tile covers,
    for tiles on the grid of starts `xs` by `ys` (farm.datasets.tile.tile_positions)."""
    tw, th = tile
    parts = []
    for starts, size, col in ((xs, tw, 0), (ys, th, 1)):
        starts = np.asarray(starts)
        k = np.searchsorted(starts, origins[:, col])
        lo = np.where(k > 0, starts[np.maximum(k - 1, 0)] + size, starts[k])
        hi = np.where(k + 1 < len(starts), starts[np.minimum(k + 1, len(starts) - 1)],
                      starts[k] + size)
        c, half = boxes[:, col], boxes[:, col + 2] / 2
        parts.append((c - half >= lo) & (c + half <= hi))
    return parts[0] & parts[1]


def drop_cut_duplicates(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Zero a cut box's class score where a whole box of that class, about as confident,
    mostly overlaps it (over the smaller area): the same mark, seen whole by the
    neighbouring tile. A cut box may be larger than the mark (the network guesses past the
    tile's edge) or smaller (half a mark). Returns the new scores."""
    scores = scores.copy()
    if not cut.any():
        return scores
    i, j = overlapping_pairs(boxes, COVERED, over="smaller", query=cut)
    whole = ~cut[j]
    i, j = i[whole], j[whole]
    for c in range(scores.shape[1]):
        mine, theirs = scores[i, c], scores[j, c]
        hit = (mine > 0) & (theirs >= AS_CONFIDENT * mine)
        scores[i[hit], c] = 0
    return scores


def merge_tiles(boxes: np.ndarray, scores: np.ndarray, tiles: np.ndarray, cut: np.ndarray,
                inside: np.ndarray | None = None, thresh: float = NMS_THRESH) -> np.ndarray:
    """The scores left when the boxes of overlapping tiles become one screenshot's
    (module docstring). `tiles`: each box's tile number; `cut`: cut_by_inner_edge;
    `inside`: own_part (None: every box may meet another tile's)."""
    scores = nms(boxes, scores, thresh, groups=tiles)
    alive = np.nonzero(scores.max(axis=1) > 0)[0] if len(scores) else np.zeros(0, np.int64)
    b, t = boxes[alive], tiles[alive]
    s = drop_cut_duplicates(b, scores[alive], cut[alive])
    reach = np.ones(len(alive), bool) if inside is None else ~inside[alive]
    i, j = overlapping_pairs(b, thresh, query=reach)
    apart = t[i] != t[j]  # boxes of one tile were suppressed (or not) by its own NMS
    i, j = i[apart], j[apart]
    once = ~reach[j]  # pairs of two reaching boxes came in both orders already
    out = np.zeros_like(scores)
    out[alive] = greedy(s, np.concatenate([i, j[once]]), np.concatenate([j, i[once]]))
    return out
