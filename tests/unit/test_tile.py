"""Tiling: positions, label clipping, origins, and mapping detections back (ds6)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm.datasets.synth import yolo_line
from farm.datasets.tile import (clip_boxes, read_origins, read_yolo, tile_dataset, tile_group,
                                tile_positions)
from farm.errors import BadInput


def _screenshot(root: Path, name: str, w: int, h: int, boxes_px: list[tuple]) -> Path:
    """A labelled image in images/ + labels/ with filled squares where the boxes are."""
    img = np.full((h, w, 3), 90, np.uint8)
    for _, x0, y0, x1, y1 in boxes_px:
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), -1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{name}.png"), img)
    (root / "labels" / f"{name}.txt").write_text(
        "".join(yolo_line(c, x0, y0, x1, y1, w, h) for c, x0, y0, x1, y1 in boxes_px))
    return root / "images" / f"{name}.png"


def test_positions_cover_the_image_with_the_last_tile_flush():
    assert tile_positions(1080, 416, 64) == [0, 352, 664]
    assert tile_positions(416, 416, 64) == [0]
    assert tile_positions(300, 416, 64) == [0]
    starts = tile_positions(2400, 416, 64)
    assert starts[-1] == 2400 - 416 and all(b - a <= 352 for a, b in zip(starts, starts[1:]))


def test_clip_keeps_a_box_only_when_enough_is_inside():
    box = [(0, 400, 10, 432, 42)]  # 32x32, half of it right of x=416
    kept, dropped = clip_boxes(box, (0, 0, 416, 416), 0.5)
    assert kept == [(0, 400, 10, 416, 42)] and dropped == 0
    kept, dropped = clip_boxes(box, (0, 0, 416, 416), 0.6)
    assert kept == [] and dropped == 1
    kept, _ = clip_boxes(box, (352, 0, 416, 416), 0.5)
    assert kept == [(0, 48, 10, 80, 42)]  # in tile coordinates


def test_tiles_labels_and_origins_map_back_to_the_screenshot(tmp_path):
    boxes = [(0, 100, 100, 132, 132), (0, 400, 500, 432, 532), (0, 1040, 2300, 1072, 2332)]
    shot = _screenshot(tmp_path / "src", "shot", 1080, 2400, boxes)
    report = tile_dataset(tmp_path / "src", tmp_path / "tiles", overlap=64, min_fraction=0.5)
    origins = list(read_origins(tmp_path / "tiles" / "tiles.jsonl"))
    assert report.tiles == len(origins) == 3 * 7
    found = set()
    for o in origins:
        assert o.source == str(shot.resolve())
        tile_img = cv2.imread(str(tmp_path / "tiles" / o.tile))
        assert tile_img.shape == (416, 416, 3)
        src = cv2.imread(str(shot))
        assert np.array_equal(tile_img[:o.h, :o.w], src[o.y:o.y + o.h, o.x:o.x + o.w])
        label = (tmp_path / "tiles" / o.tile.replace("images/", "labels/", 1)).with_suffix(".txt")
        for _, cx, cy, w, h in read_yolo(label):
            x0, y0, x1, y1 = o.box_to_image(cx, cy, w, h)
            found.add(tuple(round(v) for v in (x0, y0, x1, y1)))
    originals = {b[1:] for b in boxes}
    assert originals <= found  # overlap >= mark size: each mark is whole in some tile
    for x0, y0, x1, y1 in found - originals:  # the rest are clipped pieces of a mark
        assert any(a <= x0 and b <= y0 and x1 <= c and y1 <= d for a, b, c, d in originals)


def test_a_cut_box_below_the_fraction_is_left_out(tmp_path):
    # x 340..372: the first tile (0..416) holds all of it, the second (352..768) 20/32
    _screenshot(tmp_path / "src", "s", 768, 416, [(0, 340, 10, 372, 42)])
    report = tile_dataset(tmp_path / "src", tmp_path / "t", overlap=64, min_fraction=0.7)
    assert report.tiles == 2 and report.boxes == 1 and report.dropped_partial == 1
    report = tile_dataset(tmp_path / "src", tmp_path / "t2", overlap=64, min_fraction=0.5)
    assert report.boxes == 2
    second = (tmp_path / "t2/labels/s__x00352_y00000.txt").read_text().split()
    assert float(second[3]) * 416 == pytest.approx(20, abs=0.01)  # clipped to the tile


def test_drop_partial_skips_tiles_with_cut_marks(tmp_path):
    _screenshot(tmp_path / "src", "s", 768, 416, [(0, 340, 10, 372, 42)])
    report = tile_dataset(tmp_path / "src", tmp_path / "t", min_fraction=0.7, drop_partial=True)
    assert report.tiles == 1 and report.skipped == 1


def test_small_image_is_padded_not_stretched(tmp_path):
    _screenshot(tmp_path / "src", "small", 300, 200, [(0, 10, 10, 42, 42)])
    tile_dataset(tmp_path / "src", tmp_path / "t")
    (o,) = read_origins(tmp_path / "t/tiles.jsonl")
    assert (o.w, o.h, o.tile_w, o.tile_h) == (300, 200, 416, 416)
    _, cx, cy, w, h = read_yolo(tmp_path / "t/labels/small__x00000_y00000.txt")[0]
    assert (w * 416, h * 416) == (pytest.approx(32, abs=0.01), pytest.approx(32, abs=0.01))


def test_region_tiles_only_the_top_half(tmp_path):
    _screenshot(tmp_path / "src", "shot", 1080, 2400, [(0, 100, 100, 132, 132)])
    report = tile_dataset(tmp_path / "src", tmp_path / "t", region=(0, 0, 1, 0.5))
    origins = list(read_origins(tmp_path / "t/tiles.jsonl"))
    assert report.tiles == len(origins) == 3 * 4
    assert max(o.y + o.h for o in origins) == 1200


def test_keep_empty_is_a_stable_choice(tmp_path):
    _screenshot(tmp_path / "src", "shot", 1080, 2400, [(0, 100, 100, 132, 132)])
    a = tile_dataset(tmp_path / "src", tmp_path / "a", keep_empty=0.3, seed=1)
    b = tile_dataset(tmp_path / "src", tmp_path / "b", keep_empty=0.3, seed=1)
    assert a.tiles == b.tiles < 21 and a.boxes == 1
    assert (tmp_path / "a/tiles.jsonl").read_text() == \
        (tmp_path / "b/tiles.jsonl").read_text().replace(str(tmp_path / "b"), str(tmp_path / "a"))


def test_tile_group_strips_the_position():
    assert tile_group("shot__x00352_y01408") == "shot"
    assert tile_group("000123") == "000123"
    assert tile_group("a__xb") == "a__xb"


def test_missing_label_and_bad_overlap_are_refused(tmp_path):
    _screenshot(tmp_path / "src", "s", 500, 500, [])
    (tmp_path / "src/labels/s.txt").unlink()
    with pytest.raises(BadInput, match="no label file"):
        tile_dataset(tmp_path / "src", tmp_path / "t")
    with pytest.raises(BadInput, match="overlap"):
        tile_dataset(tmp_path / "src", tmp_path / "t", overlap=416)


def test_origins_are_json_lines(tmp_path):
    _screenshot(tmp_path / "src", "s", 500, 500, [(0, 10, 10, 42, 42)])
    tile_dataset(tmp_path / "src", tmp_path / "t")
    rows = [json.loads(x) for x in (tmp_path / "t/tiles.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"tile", "source", "x", "y", "w", "h", "tile_w", "tile_h"}
