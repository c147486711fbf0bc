"""Synthesis: true-scale labels (ds3), constant borders (ds7), determinism, bad input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from farm.datasets.synth import SynthSpec, contact_sheet, make_close_mark, synthesize
from farm.datasets.synth.render import render
from farm.datasets.synth.pixels import warp
from farm.errors import BadInput
from workers.cli.dataset import dataset

STILL = dict(rotation=0, shear=0, aspect=0, occlusion=0)  # no transform changes the size


def _labels(out: Path) -> list[tuple[str, list[float]]]:
    rows = []
    for label in sorted((out / "labels").glob("*.txt")):
        for line in label.read_text().splitlines():
            rows.append((label.name, [float(v) for v in line.split()]))
    return rows


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for sub in ("images", "labels") for p in sorted((out / sub).iterdir())}


def _inside(x0, y0, x1, y1, w, h) -> bool:
    """Not touching the canvas edge (where the visible part of a mark is smaller)."""
    return 0.5 < x0 and 0.5 < y0 and x1 < w - 0.5 and y1 < h - 0.5


def test_a_32px_mark_is_labelled_32px_on_a_416_tile(tmp_path):
    """ds3: the label must be the mark's size at the canvas scale, not the whole image."""
    spec = SynthSpec(mark_px=(32, 32), **STILL)
    records = synthesize(spec, tmp_path, 12, seed=5)
    checked = 0
    for rec in records:
        for line in Path(rec.label).read_text().splitlines():
            _, cx, cy, w, h = (float(v) for v in line.split())
            box = ((cx - w / 2) * 416, (cy - h / 2) * 416, (cx + w / 2) * 416, (cy + h / 2) * 416)
            if _inside(*box, 416, 416):  # marks cut by the canvas edge are smaller, rightly
                assert w * 416 == pytest.approx(32, abs=1.5)
                assert h * 416 == pytest.approx(32, abs=1.5)
                checked += 1
    assert checked >= 10


def test_a_32px_mark_stays_32px_on_a_full_screen(tmp_path):
    spec = SynthSpec(canvas=(1080, 2400), mark_px=(32, 32), marks=(2, 2), negatives=0, **STILL)
    rec = synthesize(spec, tmp_path, 1, seed=1)[0]
    assert cv2.imread(rec.image).shape == (2400, 1080, 3)
    for line in Path(rec.label).read_text().splitlines():
        _, _, _, w, h = (float(v) for v in line.split())
        assert w * 1080 == pytest.approx(32, abs=1.5)
        assert h * 2400 == pytest.approx(32, abs=1.5)


def test_a_template_file_with_alpha_is_pasted_at_true_scale(tmp_path):
    png = tmp_path / "close.png"
    cv2.imwrite(str(png), make_close_mark(100, "plain"))
    spec = SynthSpec(templates=[str(png)], mark_px=(32, 32), negatives=0, **STILL)
    boxes = [b for rec in synthesize(spec, tmp_path / "out", 6, seed=2) for b in rec.boxes]
    inner = [b for b in boxes if _inside(*b[1:], 416, 416)]
    assert inner and all(abs((x1 - x0) - 32) <= 1 and abs((y1 - y0) - 32) <= 1
                         for _, x0, y0, x1, y1 in inner)


def test_same_images_whatever_the_chunking_or_worker_count(tmp_path):
    spec = SynthSpec()
    synthesize(spec, tmp_path / "one", 20, seed=3)
    for start, count in ((0, 7), (7, 6), (13, 7)):
        synthesize(spec, tmp_path / "chunks", 20, seed=3, start=start, count=count)
    result = CliRunner().invoke(dataset, ["synth", str(tmp_path / "cli"), "-n", "20", "--seed",
                                          "3", "--workers", "2", "--no-sheet"])
    assert result.exit_code == 0, result.output
    one = _tree_bytes(tmp_path / "one")
    assert len(one) == 40
    assert _tree_bytes(tmp_path / "chunks") == one
    assert _tree_bytes(tmp_path / "cli") == one


def test_no_label_leaves_its_image(tmp_path):
    """Over many samples with marks at the edges, rotated, sheared and occluded."""
    spec = SynthSpec(canvas=(160, 128), mark_px=(12, 40), marks=(1, 5), rotation=40,
                     shear=0.3, aspect=0.3, occlusion=0.5, negatives=0.05)
    synthesize(spec, tmp_path, 400, seed=11)
    rows = _labels(tmp_path)
    assert len(rows) > 500
    for name, (cls, x, y, w, h) in rows:
        assert cls == 0
        assert 0 < x - w / 2 and x + w / 2 <= 1, (name, x, w)
        assert 0 < y - h / 2 and y + h / 2 <= 1, (name, y, h)
        assert 0 < w <= 1 and 0 < h <= 1


def test_labels_match_the_pixels_that_were_pasted(tmp_path):
    """On a flat canvas the pixels the mark changed fill its box (±1 px of antialiasing)."""
    spec = SynthSpec(backgrounds=[str(_flat_background(tmp_path))], brightness=0, contrast=0,
                     blur=0, noise=0, distractors=(0, 0), marks=(1, 1), negatives=0,
                     procedural="circle", jpeg_quality=(100, 100), **STILL)
    for i in range(8):
        canvas, boxes = render(spec, i, 9)
        changed = np.abs(canvas.astype(int) - 128).max(axis=2) > 0  # exact: no JPEG here
        ys, xs = np.nonzero(changed)
        (_, x0, y0, x1, y1), = boxes
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


def test_noise_stays_within_its_level_and_is_never_cancelled_out(tmp_path):
    """Noise is one cached grain window added and another subtracted: never the same one."""
    spec = SynthSpec(backgrounds=[str(_flat_background(tmp_path))], brightness=0, contrast=0,
                     blur=0, noise=1, noise_level=6, distractors=(0, 0), negatives=1)
    for i in range(6):
        diff = render(spec, i, 2)[0].astype(int) - 128
        assert diff.min() >= -6 and diff.max() <= 6
        assert diff.std() > 1.5 and abs(diff.mean()) < 0.5


def _flat_background(tmp_path: Path) -> Path:
    bg = tmp_path / "bg" / "grey.png"
    bg.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(bg), np.full((416, 416, 3), 128, np.uint8))
    return bg.parent


def test_rotation_fills_with_transparency_not_nearest_pixels():
    """ds7: "nearest" fill smeared the mark; the corners of a rotated patch stay empty."""
    patch = np.zeros((40, 40, 4), np.uint8)
    patch[:] = (0, 0, 255, 255)
    out = warp([patch], 1.0, 1.0, 30, 0.0)
    assert out.shape[0] > 40
    for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert out[y, x, 3] == 0
    assert (out[:, :, 3] >= 128).sum() == pytest.approx(40 * 40, rel=0.03)  # area kept


def test_one_warp_mirrors_and_scales_like_flip_and_resize():
    """Flip, scale and rotation are one resampling now; a mirror must still be a mirror."""
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    same = warp([patch], 1.0, 1.0, 0.0, 0.0)
    inner = (slice(1, -1), slice(1, -1))  # one transparent pixel of bilinear support around
    assert same.shape == (32, 22, 3) and np.array_equal(same[inner], patch)
    assert np.array_equal(warp([patch], -1.0, 1.0, 0.0, 0.0)[inner], cv2.flip(patch, 1))
    assert np.array_equal(warp([patch], 1.0, -1.0, 0.0, 0.0)[inner], cv2.flip(patch, 0))
    assert warp([patch], 2.0, 0.5, 0.0, 0.0).shape[:2] == (17, 42)


def test_template_and_file_background_output_is_the_same_whatever_the_chunking(tmp_path):
    """The template branch (hue, tone through cv2.transform) and file backgrounds too."""
    png = tmp_path / "close.png"
    cv2.imwrite(str(png), make_close_mark(60, "circle", fg=(250, 40, 40)))
    spec = SynthSpec(templates=[str(png)], backgrounds=[str(_flat_background(tmp_path))],
                     negatives=0, hue=20)
    synthesize(spec, tmp_path / "one", 9, seed=4)
    for start, count in ((0, 4), (4, 5)):
        synthesize(spec, tmp_path / "two", 9, seed=4, start=start, count=count)
    one = _tree_bytes(tmp_path / "one")
    assert len(one) == 18 and _tree_bytes(tmp_path / "two") == one
    first, boxes = render(spec, 3, 4)
    again, same_boxes = render(spec, 3, 4)
    assert np.array_equal(first, again) and boxes == same_boxes
    assert not np.array_equal(first, render(spec, 3, 5)[0])  # the seed matters


def test_contact_sheet_is_a_png_of_the_expected_size(tmp_path):
    records = synthesize(SynthSpec(), tmp_path / "syn", 10, seed=1)
    out = tmp_path / "sheet.png"
    size = contact_sheet([(r.image, r.label) for r in records], out, cols=4, thumb=100)
    assert size == (400, 300)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(out)).shape == (300, 400, 3)


def test_cli_writes_a_contact_sheet(tmp_path):
    result = CliRunner().invoke(dataset, ["synth", str(tmp_path), "-n", "3", "--canvas", "tile"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "contact_sheet.png")) is not None


def test_template_without_alpha_needs_a_colour_key(tmp_path):
    jpg = tmp_path / "close.jpg"
    img = np.full((64, 64, 3), 255, np.uint8)
    cv2.line(img, (8, 8), (56, 56), (0, 0, 0), 6)
    cv2.line(img, (8, 56), (56, 8), (0, 0, 0), 6)
    cv2.imwrite(str(jpg), img)
    with pytest.raises(BadInput) as e:
        synthesize(SynthSpec(templates=[str(jpg)]), tmp_path / "out", 1, seed=0)
    assert e.value.path == str(jpg) and "colour key" in e.value.hint
    spec = SynthSpec(templates=[str(jpg)], colour_key=(255, 255, 255), mark_px=(30, 30),
                     negatives=0, **STILL)
    boxes = [b for r in synthesize(spec, tmp_path / "ok", 4, seed=0) for b in r.boxes]
    inner = [b for b in boxes if _inside(*b[1:], 416, 416)]
    assert inner and all(abs((b[3] - b[1]) - 30) <= 1 for b in inner)


def test_empty_background_folder_is_refused(tmp_path):
    (tmp_path / "bg").mkdir()
    with pytest.raises(BadInput) as e:
        synthesize(SynthSpec(backgrounds=[str(tmp_path / "bg")]), tmp_path / "out", 1, seed=0)
    assert e.value.path == str(tmp_path / "bg") and "no images" in e.value.reason


def test_unknown_setting_is_refused():
    with pytest.raises(BadInput, match="unknown synthesis setting"):
        SynthSpec.from_dict({"rotaton": 5})
    spec = SynthSpec.from_dict(SynthSpec(canvas=(1080, 2400)).to_dict())
    assert spec.canvas == (1080, 2400)
