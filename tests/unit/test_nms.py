"""farm.eval.nms: the farm's one NMS, checked against brute force, and the tile merge.

The merge cases are built by hand in screenshot pixels: what the boxes of two or more
overlapping tiles look like when a mark straddles their edge, or when a mark (or a false
positive) lies whole in their overlap.
"""
from __future__ import annotations

import numpy as np
import pytest

from farm.eval.nms import (cut_by_inner_edge, drop_cut_duplicates, merge_tiles, nms,
                           overlapping_pairs)


def brute_pairs(boxes, thresh, over="union"):
    out = set()
    for i in range(len(boxes)):
        for j in range(len(boxes)):
            if i == j:
                continue
            a, b = boxes[i], boxes[j]
            w = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
            h = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
            inter = w * h if w > 0 and h > 0 else 0.0
            base = (a[2] * a[3] + b[2] * b[3] - inter if over == "union"
                    else min(a[2] * a[3], b[2] * b[3]))
            if inter / base > thresh:
                out.add((i, j))
    return out


@pytest.mark.parametrize("over", ["union", "smaller"])
@pytest.mark.parametrize("tall", [False, True])  # the sweep runs along the longer spread
def test_overlapping_pairs_equal_brute_force(over, tall):
    rng = np.random.default_rng(1)
    n = 300
    span = (100, 900) if tall else (900, 100)
    boxes = np.column_stack([rng.uniform(0, span[0], n), rng.uniform(0, span[1], n),
                             rng.uniform(2, 40, n), rng.uniform(2, 40, n)])
    boxes[:20, 2:] *= 6  # a few large ones: a box may start within another or hold it
    every = brute_pairs(boxes, 0.3, over)
    i, j = overlapping_pairs(boxes, 0.3, over=over, block=64)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(every)
    query = rng.uniform(0, 1, n) < 0.2
    i, j = overlapping_pairs(boxes, 0.3, over=over, query=query, block=64)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted((a, b) for a, b in every if query[a])


@pytest.mark.parametrize("engine", ["opencv", "sweep"])
def test_both_nms_engines_equal_darknets_loop(engine, monkeypatch):
    from tests.unit.test_detect import naive_nms
    import farm.eval.nms as module
    monkeypatch.setattr(module, "OPENCV_NMS_MAX", 10 ** 9 if engine == "opencv" else 0)
    rng = np.random.default_rng(3)
    for n in (2, 50, 500):
        boxes = np.column_stack([rng.uniform(0, 120, n), rng.uniform(0, 120, n),
                                 rng.uniform(2, 30, n), rng.uniform(2, 30, n)])
        scores = (rng.uniform(0, 1, (n, 2)) * (rng.uniform(0, 1, (n, 2)) > 0.3)).astype(
            np.float32).astype(float)  # network scores are float32
        scores[:5] = scores[0]  # ties: the earlier box wins
        assert np.array_equal(nms(boxes, scores), naive_nms(boxes, scores, 0.45))
        groups = rng.integers(0, 3, n)
        want = np.zeros_like(scores)
        for g in range(3):
            want[groups == g] = naive_nms(boxes[groups == g], scores[groups == g], 0.45)
        assert np.array_equal(nms(boxes, scores, groups=groups), want)


def test_nms_within_groups_leaves_other_groups_alone():
    boxes = np.array([[10, 10, 10, 10], [11, 10, 10, 10], [11, 10, 10, 10]], float)
    scores = np.array([[0.9], [0.8], [0.7]])
    assert nms(boxes, scores).ravel().tolist() == [0.9, 0, 0]
    assert nms(boxes, scores, groups=np.array([0, 0, 1])).ravel().tolist() == [0.9, 0, 0.7]


def naive_drop(boxes, scores, cut):
    """The tile merge's cut-box rule as a plain loop (the farm's code before it was
    vectorised)."""
    scores = scores.copy()
    whole = np.nonzero(~cut)[0]
    for i in np.nonzero(cut)[0]:
        for c in np.nonzero(scores[i] > 0)[0]:
            others = whole[scores[whole, c] >= 0.25 * scores[i, c]]
            if not len(others):
                continue
            b, o = boxes[i], boxes[others]
            iw = np.minimum(b[0] + b[2] / 2, o[:, 0] + o[:, 2] / 2) - \
                np.maximum(b[0] - b[2] / 2, o[:, 0] - o[:, 2] / 2)
            ih = np.minimum(b[1] + b[3] / 2, o[:, 1] + o[:, 3] / 2) - \
                np.maximum(b[1] - b[3] / 2, o[:, 1] - o[:, 3] / 2)
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
            if (inter / np.minimum(b[2] * b[3], o[:, 2] * o[:, 3])).max() > 0.5:
                scores[i, c] = 0
    return scores


def test_cut_duplicates_rule_equals_the_plain_loop():
    rng = np.random.default_rng(2)
    n = 400
    boxes = np.column_stack([rng.uniform(0, 200, n), rng.uniform(0, 200, n),
                             rng.uniform(4, 30, n), rng.uniform(4, 30, n)])
    scores = rng.uniform(0, 1, (n, 2)) * (rng.uniform(0, 1, (n, 2)) > 0.4)
    cut = rng.uniform(0, 1, n) < 0.3
    assert np.array_equal(drop_cut_duplicates(boxes, scores, cut),
                          naive_drop(boxes, scores, cut))


def merged(rows, tile=(64, 64), size=(112, 64)):
    """rows: (tile x, cx, cy, w, h, score) in screenshot pixels -> surviving (cx, score).
    Two tiles, at x 0 and 48 (16 px overlap)."""
    origins = np.array([[r[0], 0] for r in rows], np.int64)
    boxes = np.array([r[1:5] for r in rows], float)
    scores = np.array([[r[5]] for r in rows])
    tiles = origins[:, 0] // 48
    cut = cut_by_inner_edge(boxes, origins, tile, size)
    out = merge_tiles(boxes, scores, tiles, cut)
    return sorted((float(boxes[k, 0]), float(out[k, 0])) for k in np.nonzero(out[:, 0])[0])


def test_a_mark_straddling_the_tile_edge_is_one_box():
    """A 12 px mark at x 40..52: the left tile sees it whole, the right one (from x 48)
    only its last 4 px. IoU 4/12 is under NMS's 0.45: the cut rule is what merges them."""
    rows = [(0, 46, 30, 12, 12, 0.6),      # whole in the left tile
            (48, 50, 30, 4, 12, 0.8)]      # the right tile's piece, cut at x=48
    assert merged(rows) == [(46.0, 0.6)]
    # the piece alone (the left tile missed the mark) is still a detection
    assert merged(rows[1:]) == [(50.0, 0.8)]
    # a whole box far less confident than the piece does not take its place
    assert merged([(0, 46, 30, 12, 12, 0.1), rows[1]]) == [(46.0, 0.1), (50.0, 0.8)]


def test_a_box_whole_in_the_overlap_is_one_box_however_confident_each_tile_is():
    rows = [(0, 56, 30, 6, 6, 0.5), (48, 56.5, 30, 6, 6, 0.9)]
    assert merged(rows) == [(56.5, 0.9)]


def test_only_inner_tile_edges_cut():
    """A mark at the image's right edge touches the tile's edge but is whole."""
    boxes = np.array([[109, 30, 6, 6], [47, 30, 6, 6], [20, 30, 6, 6]], float)
    origins = np.array([[48, 0], [0, 0], [0, 0]])
    assert cut_by_inner_edge(boxes, origins, (64, 64), (112, 64)).tolist() == \
        [False, False, False]
    boxes[1, 0] = 62  # its right side at 65: past the left tile's inner edge at 64
    assert cut_by_inner_edge(boxes, origins, (64, 64), (112, 64)).tolist() == \
        [False, True, False]
