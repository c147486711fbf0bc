"""farm.eval.detect without a network: darknet's NMS, and how tiles are merged.

The tiling test runs DnnDetector.detect_tiled with a stand-in for the network (the only
stand-in here): a "perfect detector" that reports exactly the visible part of each white
square in the tile it is shown, so whatever goes wrong is the tiling's own doing.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from farm.errors import BadInput
from farm.eval.detect import DnnDetector, Found, nms


def test_nms_is_darknets_greedy_per_class_suppression():
    boxes = np.array([[10, 10, 10, 10],     # best
                      [12, 10, 10, 10],     # IoU 8/12 = .67 with the best: suppressed
                      [16.5, 10, 10, 10],   # IoU 3.5/16.5 = .21: kept
                      [10, 10, 10, 10]], float)  # same place, another class: kept
    scores = np.array([[0.9, 0], [0.8, 0], [0.7, 0], [0, 0.6]])
    out = nms(boxes, scores, 0.45)
    assert out[:, 0].tolist() == [0.9, 0.0, 0.7, 0.0] and out[3, 1] == 0.6
    assert nms(np.zeros((0, 4)), np.zeros((0, 2))).shape == (0, 2)


def naive_nms(boxes, scores, thresh):
    """do_nms_sort as darknet's C loop does it: sort, then every later box against each
    kept one."""
    scores = scores.copy()
    for c in range(scores.shape[1]):
        order = [i for i in np.argsort(-scores[:, c], kind="stable") if scores[i, c] > 0]
        for k, i in enumerate(order):
            if scores[i, c] == 0:
                continue
            for j in order[k + 1:]:
                a, b = boxes[i], boxes[j]
                w = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
                h = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
                inter = w * h if w > 0 and h > 0 else 0.0
                if inter / (a[2] * a[3] + b[2] * b[3] - inter) > thresh:
                    scores[j, c] = 0
    return scores


def test_nms_equals_darknets_loop_on_crowded_random_boxes():
    rng = np.random.default_rng(0)
    for n in (1, 7, 60, 400):
        boxes = np.column_stack([rng.uniform(0, 100, n), rng.uniform(0, 100, n),
                                 rng.uniform(2, 30, n), rng.uniform(2, 30, n)])
        scores = rng.uniform(0, 1, (n, 2)) * (rng.uniform(0, 1, (n, 2)) > 0.3)
        assert np.array_equal(nms(boxes, scores, 0.45), naive_nms(boxes, scores, 0.45))


class SquareFinder(DnnDetector):
    """A network stand-in: each white square visible in the tile, as a box; a square cut
    by the tile's edge is reported as `overshoot` px larger on the cut side (networks
    guess past the edge)."""

    def __init__(self, size=64, overshoot=0.0):
        self.width = self.height = size
        self.classes, self.nms, self.overshoot = 1, 0.45, overshoot

    def raw(self, image):
        mask = (image[:, :, 0] > 200).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = []
        for x, y, w, h, _ in stats[1:n]:
            x0, y0, x1, y1 = float(x), float(y), float(x + w), float(y + h)
            o = self.overshoot
            x0, y0 = x0 - o * (x == 0), y0 - o * (y == 0)
            x1 += o * (x + w == image.shape[1])
            y1 += o * (y + h == image.shape[0])
            boxes.append([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
        boxes = np.array(boxes, float).reshape(-1, 4)
        return boxes, np.full((len(boxes), 1), 0.9)

    def raw_tiles(self, tiles):
        found = [self.raw(t) for t in tiles]
        which = np.concatenate([np.full(len(b), k) for k, (b, _) in enumerate(found)])
        return (np.concatenate([b for b, _ in found]), np.concatenate([s for _, s in found]),
                which.astype(np.int64))


SQUARES = [(5, 5, 12), (54, 20, 14), (100, 90, 16), (60, 60, 10), (150, 230, 12)]


def scene(w=192, h=320) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for x, y, s in SQUARES:
        img[y:y + s, x:x + s] = 255
    return img


@pytest.mark.parametrize("overshoot", [0.0, 6.0])
def test_each_square_is_found_once_whole_however_the_tiles_cut_it(overshoot):
    found = SquareFinder(overshoot=overshoot).detect_tiled(scene())
    boxes = sorted((round(f.cx - f.w / 2), round(f.cy - f.h / 2), round(f.w)) for f in found)
    assert boxes == sorted(SQUARES)


def test_an_image_smaller_than_a_tile_is_padded_not_stretched():
    [f] = SquareFinder(size=64).detect_tiled(scene(40, 50)[:50, :40])
    assert (f.cx, f.cy, f.w, f.h) == (11.0, 11.0, 12.0, 12.0)


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(BadInput, match="overlap 64"):
        SquareFinder(size=64).detect_tiled(scene(), overlap=64)


def test_found_corners():
    assert Found(0, 0.5, 10, 20, 4, 6).corners == (8, 17, 12, 23)


def test_letterbox_fits_and_centres_the_image_as_darknet_does():
    from farm.eval.detect import _letterbox
    image = np.full((50, 100, 3), 255, np.uint8)
    boxed, (sx, sy, ox, oy) = _letterbox(image, 64, 64)
    assert boxed.shape == (64, 64, 3) and (sx, sy, ox, oy) == (1.0, 0.5, 0.0, 0.25)
    assert (boxed[16:48] == 255).all() and (boxed[:16] == 128).all() and (boxed[48:] == 128).all()


class Degenerate(SquareFinder):
    """The stand-in network also reports, in every tile, boxes of zero or sub-pixel height
    or width (what an untrained head's exp() can regress to)."""

    def raw(self, image):
        boxes, scores = super().raw(image)
        junk = np.array([[10, 10, 8, 0.0], [10, 10, 8, 0.4], [30, 30, 0.0, 8]])
        return np.vstack([boxes, junk]), np.vstack([scores, np.full((3, 1), 0.95)])


def test_tiled_detection_reports_no_zero_area_box():
    found = Degenerate().detect_tiled(scene())
    assert found and all(f.w >= 1 and f.h >= 1 for f in found)
    boxes = sorted((round(f.cx - f.w / 2), round(f.cy - f.h / 2), round(f.w)) for f in found)
    assert boxes == sorted(SQUARES)


def test_json_never_lists_a_box_with_nothing_on_the_image():
    from farm.eval.detect import found_json
    out = found_json([Found(0, 0.9, 10, 10, 8, 8), Found(0, 0.9, 210, 10, 8, 8),
                      Found(0, 0.9, 10, 10, 8, 0.05)], ["close"], 0.25, (192, 320))
    assert [(d["x0"], d["y0"], d["x1"], d["y1"]) for d in out] == [(6.0, 6.0, 14.0, 14.0)]
