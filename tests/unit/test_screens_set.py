"""Screens sets: full labelled screenshots packaged whole, measured, linted, refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from farm.datasets.lint import lint_obj_data
from farm.datasets.package import package
from farm.datasets.screens import open_screens, package_screens
from farm.errors import BadInput, FindingsError
from tests.screens_kit import labelimg_folder
from workers.cli.dataset import dataset


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("shots") / "labelimg"
    return root, labelimg_folder(root, 5, seed=1)


def test_a_labelimg_folder_becomes_a_screens_set_with_every_mark_measured(shots, tmp_path):
    root, boxes = shots
    result = package_screens([root], tmp_path / "ds", names=root / "obj.names")
    assert result.created and (result.images, result.train, result.valid) == (5, 0, 5)
    folder = Path(result.path)
    assert (folder / "train.txt").read_text() == ""
    assert len((folder / "valid.txt").read_text().split()) == 5
    screens = open_screens(folder / "obj.data")
    manifest = screens.manifest
    assert manifest["kind"] == "screens" and manifest["screens"]["sizes"] == {"216x480": 5}
    drawn = sorted((x1 - x0, y1 - y0) for b in boxes for x0, y0, x1, y1 in b)
    assert sorted(map(tuple, np.round(screens.mark_px).astype(int).tolist())) == drawn
    assert manifest["screens"]["long_side_px"]["max"] == max(s for s, _ in drawn)
    # the boxes read back in pixels are the ones drawn, screen by screen
    read = [sorted(tuple(round(v) for v in b[1:]) for b in found) for _, found in screens.items()]
    assert read == [sorted(b) for b in boxes]
    again = package_screens([root], tmp_path / "ds", names=root / "obj.names")
    assert again.dataset_id == result.dataset_id and not again.created


def test_a_screens_set_cannot_be_trained_on(shots, tmp_path):
    root, _ = shots
    result = package_screens([root], tmp_path / "ds", names=root / "obj.names")
    report = lint_obj_data(Path(result.path) / "obj.data")
    assert any(f.path.endswith("train.txt") and "no images" in f.reason
               and f.severity == "error" for f in report.findings)


def test_an_image_without_xml_is_refused_and_nothing_is_written(shots, tmp_path):
    root, _ = shots
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in root.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "shot002.xml").unlink()
    with pytest.raises(FindingsError) as err:
        package_screens([copy], tmp_path / "ds", names=copy / "obj.names")
    assert any("shot002.png" in f.path and "no annotation XML" in f.reason
               for f in err.value.findings)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())


def test_a_box_leaving_the_screen_is_refused_with_its_line(tmp_path):
    """A YOLO-labelled folder (not labelImg): the label's second box reaches past the
    right edge; the dataset lint alone accepts it (its numbers are all in (0, 1])."""
    src = tmp_path / "yolo"
    labelimg_folder(src, 2, seed=3)
    for xml in src.glob("*.xml"):
        xml.unlink()
    (src / "shot000.txt").write_text("0 0.5 0.5 0.1 0.05\n0 0.98 0.5 0.1 0.05\n")
    (src / "shot001.txt").write_text("0 0.3 0.3 0.1 0.05\n")
    with pytest.raises(FindingsError) as err:
        package_screens([src], tmp_path / "ds")
    [finding] = [f for f in err.value.findings if f.severity == "error"]
    assert finding.path.endswith("shot000.txt") and finding.line == 2
    assert "leaves the 216x480 screen" in finding.reason
    assert package([src], tmp_path / "train").created  # fine as training data


def test_a_training_dataset_is_not_a_screens_set(shots, tmp_path):
    root, _ = shots
    labelled = tmp_path / "imported"
    from farm.datasets.voc import import_voc
    import_voc(root, root / "obj.names", labelled)
    train = package([labelled], tmp_path / "train")
    with pytest.raises(BadInput, match="not a screens set"):
        open_screens(train.path)
    with pytest.raises(BadInput, match="no manifest"):
        open_screens(tmp_path)


def test_cli_packages_screens_and_prints_what_it_measured(shots, tmp_path):
    root, _ = shots
    out = CliRunner().invoke(dataset, ["package", "--kind", "screens", str(root), "--names",
                                       str(root / "obj.names"), "--root", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "5 screens [216x480 (5)]" in out.output and "marks 14-22 px" in out.output
    obj_data = out.output.strip().splitlines()[-1]
    assert json.loads((Path(obj_data).parent / "manifest.json").read_text())["kind"] == "screens"
