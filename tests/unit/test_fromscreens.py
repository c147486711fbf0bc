"""Synthesis from the user's screens: the labelled size distribution comes out again, and
no painted-out mark stays visible. The screens are drawn here (tests/screens_kit.py)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from farm.datasets.synth.fromscreens import (ScreenSynthSpec, label_sizes, paint_out,
                                       sheet_caption, synthesize_from_screens)
from farm.datasets.screens import open_screens, package_screens
from farm.errors import BadInput
from tests.screens_kit import draw_close, labelimg_folder
from workers.cli.dataset import dataset


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs")
    labelimg_folder(root / "labelimg", 40, size=(216, 480), mark_px=(12, 40), seed=11)
    made = package_screens([root / "labelimg"], root / "ds", names=root / "labelimg/obj.names")
    return open_screens(made.path)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def ks_critical(n: int, m: int, alpha: float = 0.001) -> float:
    return float(np.sqrt(-np.log(alpha / 2) / 2) * np.sqrt((n + m) / (n * m)))


@pytest.fixture(scope="module")
def synthesized(screens, tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    spec = ScreenSynthSpec(canvas=(96, 96), negatives=0.05)
    prep = synthesize_from_screens(screens, out, 400, seed=3, spec=spec)
    return out, prep


def test_the_labelled_size_distribution_comes_out_again(screens, synthesized):
    out, _ = synthesized
    labelled = screens.mark_px
    made = label_sizes(out)
    assert len(labelled) >= 60 and len(made) >= 500
    for axis in (0, 1):  # width and height, each in screen pixels
        d = ks_statistic(labelled[:, axis], made[:, axis])
        assert d < ks_critical(len(labelled), len(made)), (axis, d)
        q = np.quantile(labelled[:, axis], [0.1, 0.5, 0.9])
        assert np.allclose(np.quantile(made[:, axis], [0.1, 0.5, 0.9]), q, rtol=0.1, atol=1.5)
    # the test can fail: the same marks 30 % larger are told apart
    assert ks_statistic(labelled[:, 0] * 1.3, made[:, 0]) > ks_critical(len(labelled),
                                                                         len(made))


def test_no_painted_out_mark_stays_visible(screens, synthesized):
    """Every labelled box of every screen: the painted screen differs from the original
    under the box, and the mark itself is found there no more (normalised correlation of
    the original mark against the painted screen, searched a few pixels around)."""
    out, prep = synthesized
    checked = 0
    for (image, boxes), painted_path in zip(screens.items(), prep.backgrounds):
        original = cv2.imread(image)
        painted = cv2.imread(painted_path)
        assert painted.shape == original.shape
        for _, x0, y0, x1, y1 in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
            mark = original[y0:y1, x0:x1]
            under = painted[y0:y1, x0:x1]
            assert np.mean(np.abs(mark.astype(int) - under.astype(int))) > 10
            window = painted[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4]
            score = cv2.matchTemplate(window, mark, cv2.TM_CCOEFF_NORMED).max()
            assert score < 0.5, (image, (x0, y0), score)
            assert cv2.matchTemplate(original[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4],
                                     mark, cv2.TM_CCOEFF_NORMED).max() > 0.99
            checked += 1
    assert checked == len(screens.mark_px)


def test_a_mark_with_no_clean_patch_beside_it_is_inpainted_away():
    """A mark filling a small screen: no patch of its size fits beside it."""
    rng = np.random.default_rng(0)
    img = np.full((48, 48, 3), (40, 120, 200), np.uint8)
    draw_close(img, 6, 6, 36, rng)
    painted, how = paint_out(img, [(6, 6, 42, 42)])
    assert how == ["inpaint"]
    mark = img[6:42, 6:42]
    assert cv2.matchTemplate(painted, mark, cv2.TM_CCOEFF_NORMED).max() < 0.5
    assert np.abs(painted[6:42, 6:42].astype(int) - (40, 120, 200)).mean() < 20


def test_marks_are_pasted_at_true_scale_on_windows_of_the_screens(synthesized):
    out, prep = synthesized
    assert {cv2.imread(str(p)).shape for p in list((out / "images").glob("*.jpg"))[:20]} \
        == {(96, 96, 3)}
    meta = json.loads((out / "synth.json").read_text())
    assert meta["from_screens"] == prep.screens_id and meta["measured"]["marks"] == \
        len(prep.sizes)
    empty = sum(not p.read_text().strip() for p in (out / "labels").glob("*.txt"))
    assert 0 < empty < 60  # 5 % negatives of 400, give or take
    lines = sheet_caption(prep, label_sizes(out), 400, (96, 96))
    q = meta["measured"]["long_side_px"]
    assert f"median {q['median']:g}" in lines[0] and "400 images 96x96" in lines[1]


def test_the_same_seed_gives_the_same_images_however_the_work_is_split(screens, tmp_path):
    spec = ScreenSynthSpec(canvas=(64, 64))
    synthesize_from_screens(screens, tmp_path / "a", 12, seed=5, spec=spec)
    synthesize_from_screens(screens, tmp_path / "b", 12, seed=5, spec=spec, count=5)
    synthesize_from_screens(None, tmp_path / "b", 12, seed=5, spec=spec, start=5,
                            prepared=True)
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a/images" / name).read_bytes() == \
            (tmp_path / "b/images" / name).read_bytes()


def test_cli_writes_a_captioned_sheet_and_refuses_sizes_given_by_hand(screens, tmp_path):
    runner = CliRunner()
    out = runner.invoke(dataset, ["synth", str(tmp_path / "s"), "-n", "16", "--from-screens",
                                  screens.path, "--canvas", "64x64"])
    assert out.exit_code == 0, out.output
    assert "mark sizes from" in out.output and "median" in out.output
    sheet = cv2.imread(str(tmp_path / "s" / "contact_sheet.png"))
    assert sheet.shape[0] == 2 * 192 + 2 * 22 + 10  # 16 images in 2 rows, 2 caption lines
    out = runner.invoke(dataset, ["synth", str(tmp_path / "t"), "--from-screens", screens.path,
                                  "--mark-px", "10-20"])
    assert out.exit_code != 0 and isinstance(out.exception, BadInput)
    assert "--mark-px cannot be used with --from-screens" in str(out.exception)
