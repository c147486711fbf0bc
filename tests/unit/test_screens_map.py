"""Screens mAP on a constructed case, computed by hand.

The network is the one stand-in here (tests/unit/test_detect.py's idea): a "perfect
detector" reporting each bright square visible in the tile it is shown, its confidence
its grey level, a square cut by the tile's edge as the part it sees. Everything else is
the farm's: the screens set, the tiles, the merge, mapcalc. The screen is 112x64; the
64x64 tiles start at x 0 and 48 (overlap 16):

    A  x  8..20  grey 230 (0.90)  labelled     whole in the left tile
    FP x 54..60  grey 204 (0.80)  not labelled whole in both tiles (their overlap)
    B  x 40..52  grey 179 (0.70)  labelled     whole in the left tile, cut at x 48 in the right

By hand: A is a TP at 0.90, FP one false positive at 0.80 (not two), B one TP at 0.70 (its
piece in the right tile is no second detection). Precision/recall after each: (1, 1/2),
(1/2, 1/2), (2/3, 1). darknet's AUC: recall 0->1/2 at precision 1, 1/2->1 at 2/3:
AP = 1/2 + 1/2 * 2/3 = 5/6. Counting the FP twice would give 3/4, and B's piece as one
more false positive changes TP/FP at 0.25 as well.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from farm.datasets.screens import package_screens
from farm.datasets.synth import yolo_line
from farm.eval.detect import DnnDetector, load_cfg
from farm.eval.screens import evaluate_screens
from workers.micro import micro_cfg, random_weights

SQUARES = {"A": (8, 10, 12, 230, True), "FP": (54, 40, 6, 204, False),
           "B": (40, 30, 12, 179, True)}


class GreySquares(DnnDetector):
    """Stand-in for the network: bright squares in a tile, confidence = grey / 255."""

    def __init__(self, cfg):
        self.cfg = load_cfg(cfg)
        self.width = self.height = 64
        self.classes, self.nms, self.channels = 1, 0.45, 3

    def raw_tiles(self, tiles):
        boxes, scores, which = [], [], []
        for k, tile in enumerate(tiles):
            grey = tile[:, :, 0]
            n, labels, stats, _ = cv2.connectedComponentsWithStats((grey > 150).astype(np.uint8))
            for j, (x, y, w, h, _) in enumerate(stats[1:n], 1):
                boxes.append([x + w / 2, y + h / 2, w, h])
                scores.append([round(float(grey[labels == j].mean()) / 255, 2)])
                which.append(k)
        return (np.array(boxes, float).reshape(-1, 4), np.array(scores, float).reshape(-1, 1),
                np.array(which, np.int64))


@pytest.fixture
def case(tmp_path):
    src = tmp_path / "shot"
    src.mkdir()
    img = np.full((64, 112, 3), 40, np.uint8)
    lines = []
    for x, y, s, grey, labelled in SQUARES.values():
        img[y:y + s, x:x + s] = grey
        if labelled:
            lines.append(yolo_line(0, x, y, x + s, y + s, 112, 64))
    cv2.imwrite(str(src / "screen.png"), img)
    (src / "screen.txt").write_text("".join(lines))
    (src / "obj.names").write_text("close\n")
    made = package_screens([src], tmp_path / "ds")
    cfg = micro_cfg(tmp_path / "micro.cfg")
    weights = random_weights(cfg, tmp_path / "micro.weights", dialect="pjreddie")
    return made.path, cfg, weights


def test_screens_map_equals_the_hand_computation(case):
    screens, cfg, weights = case
    result = evaluate_screens(weights, screens=screens, cfg=cfg, overlap=16,
                              detector=GreySquares(cfg))
    assert result.map == pytest.approx(5 / 6)
    assert (result.tp, result.fp, result.fn) == (2, 1, 0)
    assert result.detections == 3 and result.truths == 2 and result.images == 1
    assert result.tiled and result.overlap == 16 and result.tile == (64, 64)


def test_without_the_merge_the_same_case_scores_differently(case):
    """The same boxes with each tile's detections kept apart (what a naive tiler does):
    the FP counts twice and B's piece is another FP, so the hand number is not met by
    accident."""
    screens, cfg, weights = case
    detector = GreySquares(cfg)
    import farm.eval.detect as detect
    real = detect.merge_tiles
    try:
        detect.merge_tiles = lambda boxes, scores, *rest: scores
        naive = evaluate_screens(weights, screens=screens, cfg=cfg, overlap=16,
                                 detector=detector)
    finally:
        detect.merge_tiles = real
    assert naive.fp == 3 and naive.map != pytest.approx(5 / 6)


def test_the_default_overlap_holds_the_largest_mark(case):
    screens, cfg, weights = case
    result = evaluate_screens(weights, screens=screens, cfg=cfg, detector=GreySquares(cfg))
    assert result.overlap == 32  # min(64, tile/2); the 12 px marks need only 16
