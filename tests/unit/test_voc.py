"""labelImg VOC import: exact conversion, and each doubtful case reported with where."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from farm.datasets.voc import import_voc, read_names
from farm.errors import BadInput, FindingsError
from workers.cli.dataset import dataset


def _xml(filename: str, w: int, h: int, objects: list[tuple]) -> str:
    """labelImg's layout: one element per line, as it writes them."""
    objs = "".join(f"""
\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x0}</xmin>
\t\t\t<ymin>{y0}</ymin>
\t\t\t<xmax>{x1}</xmax>
\t\t\t<ymax>{y1}</ymax>
\t\t</bndbox>
\t</object>""" for name, x0, y0, x1, y1 in objects)
    return f"""<annotation>
\t<folder>close_data</folder>
\t<filename>{filename}</filename>
\t<path>/home/a/close_data/{filename}</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>{objs}
</annotation>
"""


def _image(path: Path, w: int = 416, h: int = 416) -> Path:
    cv2.imwrite(str(path), np.full((h, w, 3), 200, np.uint8))
    return path


@pytest.fixture
def labelled(tmp_path):
    src = tmp_path / "close_data"
    src.mkdir()
    (tmp_path / "obj.names").write_text("close\nother\n")
    _image(src / "88.jpg")
    (src / "88.xml").write_text(_xml("88.jpg", 416, 416, [("close", 1, 1, 32, 32),
                                                          ("other", 100, 50, 140, 80)]))
    return tmp_path


def test_converts_like_labelimg(labelled):
    report = import_voc(labelled / "close_data", labelled / "obj.names", labelled / "out")
    assert (report.converted, report.objects, report.findings) == (1, 2, [])
    lines = (labelled / "out/labels/88.txt").read_text().splitlines()
    assert lines[0] == "0 0.039663 0.039663 0.074519 0.074519"  # the seed's 88.txt
    assert lines[1] == "1 0.288462 0.156250 0.096154 0.072115"
    assert (labelled / "out/images/88.jpg").read_bytes() == \
        (labelled / "close_data/88.jpg").read_bytes()
    assert read_names(labelled / "out/obj.names") == ["close", "other"]


def _findings(root: Path, **kw):
    with pytest.raises(FindingsError) as e:
        import_voc(root / "close_data", root / "obj.names", root / "out", **kw)
    assert not (root / "out").exists(), "strict import writes nothing when it finds errors"
    return e.value.findings


def test_unknown_class_is_reported_at_its_object(labelled):
    xml = labelled / "close_data/88.xml"
    xml.write_text(_xml("88.jpg", 416, 416, [("close", 1, 1, 32, 32), ("Close", 5, 5, 9, 9)]))
    (f,) = _findings(labelled)
    assert f.path == str(xml) and f.line == 26 and "'Close' is not in obj.names" in f.reason


def test_box_outside_the_image_is_reported(labelled):
    xml = labelled / "close_data/88.xml"
    xml.write_text(_xml("88.jpg", 416, 416, [("close", 400, 10, 430, 40)]))
    (f,) = _findings(labelled)
    assert f.path == str(xml) and f.line == 14 and "outside the 416x416 image" in f.reason


def test_image_without_xml_is_reported(labelled):
    lonely = _image(labelled / "close_data/89.jpg")
    (f,) = _findings(labelled)
    assert f.path == str(lonely) and "no annotation XML" in f.reason


def test_xml_without_image_is_reported(labelled):
    xml = labelled / "close_data/90.xml"
    xml.write_text(_xml("90.jpg", 416, 416, [("close", 1, 1, 32, 32)]))
    (f,) = _findings(labelled)
    assert f.path == str(xml) and "no image for this annotation" in f.reason


def test_corrupt_xml_is_reported_with_the_parser_line(labelled):
    xml = labelled / "close_data/88.xml"
    text = _xml("88.jpg", 416, 416, [("close", 1, 1, 32, 32)]).splitlines()
    text[5] = "\t\t<database>Unknown & Co</database>"  # line 6: a bare & is not XML
    xml.write_text("\n".join(text))
    (f,) = _findings(labelled)
    assert f.path == str(xml) and f.line == 6 and "XML is broken" in f.reason


def test_size_that_does_not_match_the_image_is_reported(labelled):
    xml = labelled / "close_data/88.xml"
    xml.write_text(_xml("88.jpg", 1080, 2400, [("close", 1, 1, 32, 32)]))
    (f,) = _findings(labelled)
    assert f.line == 8 and "XML says 1080x2400 but 88.jpg is 416x416" in f.reason


def test_keep_going_converts_the_clean_files(labelled):
    _image(labelled / "close_data/89.jpg")
    report = import_voc(labelled / "close_data", labelled / "obj.names", labelled / "out",
                        strict=False)
    assert report.converted == 1 and len(report.errors) == 1
    assert (labelled / "out/labels/88.txt").is_file()
    assert not (labelled / "out/labels/89.txt").exists()


def test_separate_image_folder_and_xml_folder(tmp_path):
    (tmp_path / "imgs/sub").mkdir(parents=True)
    (tmp_path / "xml/sub").mkdir(parents=True)
    _image(tmp_path / "imgs/sub/shot.png", 1080, 2400)
    (tmp_path / "xml/sub/shot.xml").write_text(
        _xml("shot.png", 1080, 2400, [("close", 1000, 40, 1032, 72)]))
    report = import_voc(tmp_path / "xml", ["close"], tmp_path / "out", image_dir=tmp_path / "imgs")
    assert report.converted == 1
    assert (tmp_path / "out/labels/sub/shot.txt").read_text() == \
        "0 0.940741 0.023333 0.029630 0.013333\n"


def test_cli_prints_every_finding_and_fails(labelled):
    _image(labelled / "close_data/89.jpg")
    (labelled / "close_data/91.xml").write_text("<annotation>")
    result = CliRunner().invoke(dataset, ["import-voc", str(labelled / "close_data"), "--names",
                                          str(labelled / "obj.names"), "--out",
                                          str(labelled / "out")])
    assert isinstance(result.exception, FindingsError)
    assert "89.jpg: image has no annotation XML" in result.stderr
    assert "91.xml:1: XML is broken" in result.stderr


def test_blank_line_inside_names_is_refused(tmp_path):
    (tmp_path / "obj.names").write_text("close\n\nother\n")
    with pytest.raises(BadInput) as e:
        read_names(tmp_path / "obj.names")
    assert e.value.line == 2
