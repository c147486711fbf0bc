"""Packaging: content ids, the split, the manifest, nothing half-written, safe archives."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from farm.datasets.package import export_dataset, extract_dataset, package
from farm.datasets.synth import SynthSpec, synthesize, yolo_line
from farm.datasets.tile import tile_dataset, tile_group
from farm.errors import BadInput, FindingsError
from workers.cli.dataset import dataset


@pytest.fixture(scope="module")
def synth_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    synthesize(SynthSpec(mark_px=(20, 40)), out, 24, seed=7)
    return out


@pytest.fixture(scope="module")
def tiles_src(tmp_path_factory) -> Path:
    """Tiles of six 1000x900 screenshots: 9 tiles each."""
    root = tmp_path_factory.mktemp("shots")
    (root / "src/images").mkdir(parents=True)
    (root / "src/labels").mkdir(parents=True)
    (root / "src/obj.names").write_text("close\n")
    for k in range(6):
        img = np.full((900, 1000, 3), 40 * k, np.uint8)
        cv2.rectangle(img, (100, 100), (131, 131), (255, 255, 255), -1)
        cv2.imwrite(str(root / f"src/images/shot{k}.jpg"), img)
        (root / f"src/labels/shot{k}.txt").write_text(yolo_line(0, 100, 100, 132, 132, 1000, 900))
    tile_dataset(root / "src", root / "tiles")
    return root / "tiles"


def _copy(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_inputs_same_id_and_a_changed_pixel_changes_it(synth_src, tmp_path):
    first = package([synth_src], tmp_path / "root")
    assert first.created and first.images == 24 and first.train + first.valid == 24
    again = package([synth_src], tmp_path / "root")
    assert (again.dataset_id, again.created) == (first.dataset_id, False)
    moved = package([_copy(synth_src, tmp_path / "elsewhere")], tmp_path / "root")
    assert moved.dataset_id == first.dataset_id  # content, not location
    changed = _copy(synth_src, tmp_path / "changed")
    img = cv2.imread(str(changed / "images/000003.jpg"))
    img[5, 5] = 255 - img[5, 5]
    cv2.imwrite(str(changed / "images/000003.jpg"), img)
    assert package([changed], tmp_path / "root").dataset_id != first.dataset_id
    assert package([synth_src], tmp_path / "root", seed=1).dataset_id != first.dataset_id
    assert sorted(os.listdir(tmp_path / "root")) == sorted(
        {first.dataset_id, package([changed], tmp_path / "root").dataset_id,
         package([synth_src], tmp_path / "root", seed=1).dataset_id})


def test_layout_lists_and_manifest(synth_src, tmp_path):
    result = package([synth_src], tmp_path / "root", network=(416, 416))
    ds = Path(result.path)
    assert ds == (tmp_path / "root" / result.dataset_id).resolve()
    data = (ds / "obj.data").read_text()
    assert f"train = {ds}/train.txt" in data and f"backup = {ds}/backup" in data
    assert (ds / "backup").is_dir() and (ds / "obj.names").read_text() == "close\n"
    train = (ds / "train.txt").read_text().splitlines()
    valid = (ds / "valid.txt").read_text().splitlines()
    assert len(train) == result.train and len(valid) == result.valid and valid
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in train + valid)
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["id"] == result.dataset_id and manifest["sha256"].startswith(result.dataset_id)
    files = manifest["files"]
    assert len(files) == 24 * 2 + 1
    for rel, entry in files.items():
        assert _sha(ds / rel) == entry["sha256"]
    for name in ("train.txt", "valid.txt", "obj.data"):
        assert _sha(ds / name) == manifest["lists"][name]
    objects = sum(len(p.read_text().splitlines()) for p in (synth_src / "labels").glob("*.txt"))
    counts = manifest["counts"]
    assert counts["per_class"] == {"close": objects} and counts["objects"] == objects
    sizes = counts["object_size_px"]
    assert sum(sizes["histogram"]["counts"]) == objects
    assert 15 <= sizes["min"] and sizes["max"] <= 50  # marks of 20-40 px, at 416 = true size


def test_tiles_of_one_screenshot_never_straddle_the_split(tiles_src, tmp_path):
    result = package([tiles_src], tmp_path / "root", valid_ratio=0.5, seed=3)
    ds = Path(result.path)
    side = {}
    for split in ("train", "valid"):
        for line in (ds / f"{split}.txt").read_text().splitlines():
            side.setdefault(tile_group(Path(line).stem), set()).add(split)
    assert len(side) == 6 and all(len(s) == 1 for s in side.values())
    assert result.train and result.valid and result.train % 9 == 0


def test_a_tiny_set_still_gets_a_validation_image(synth_src, tmp_path):
    result = package([synth_src], tmp_path / "root", valid_ratio=0.01, seed=0)
    assert result.valid >= 1 and result.train >= 1


def test_given_validation_list(tiles_src, tmp_path):
    (tmp_path / "valid.list").write_text("/home/u/shots/shot2.jpg\nshot4.png\n")
    result = package([tiles_src], tmp_path / "root", valid_list=tmp_path / "valid.list")
    valid = (Path(result.path) / "valid.txt").read_text()
    assert result.valid == 18 and valid.count("shot2__") == 9 and valid.count("shot4__") == 9


def _listing(root: Path) -> list[str]:
    return sorted(os.listdir(root))


def test_an_unreadable_image_leaves_nothing_half_written(synth_src, tmp_path):
    root = tmp_path / "root"
    kept = package([synth_src], root).dataset_id
    bad = _copy(synth_src, tmp_path / "bad")
    (bad / "images/000010.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(BadInput) as e:
        package([bad], root)
    assert e.value.path == str(bad / "images/000010.jpg")
    assert _listing(root) == [kept]  # no temporary folder, no partial dataset


def test_lint_errors_stop_packaging_before_the_rename(synth_src, tmp_path):
    """pjreddie swaps the first "images" in a path for "labels": this root breaks that."""
    root = tmp_path / "images_root"
    with pytest.raises(FindingsError):
        package([synth_src], root, dialect="pjreddie")
    assert _listing(root) == []
    assert package([synth_src], root, dialect="alexeyab").created


def test_bad_labels_are_all_reported(synth_src, tmp_path):
    bad = _copy(synth_src, tmp_path / "bad")
    (bad / "labels/000001.txt").write_text("0 0.5 0.5 0.1\n")
    (bad / "labels/000002.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    (bad / "labels/000004.txt").unlink()
    with pytest.raises(FindingsError) as e:
        package([bad], tmp_path / "root")
    reasons = {Path(f.path).name: f.reason for f in e.value.findings}
    assert "fields instead of 5" in reasons["000001.txt"]
    assert "class id 3" in reasons["000002.txt"]
    assert "no label file" in reasons["000004.jpg"]
    assert _listing(tmp_path / "root") == []


def test_export_and_extract_elsewhere(synth_src, tmp_path):
    result = package([synth_src], tmp_path / "root")
    archive = export_dataset(result.path, tmp_path / "ds.tar.gz")
    where = Path(extract_dataset(archive, tmp_path / "other"))
    assert where == (tmp_path / "other" / result.dataset_id).resolve()
    for line in (where / "train.txt").read_text().splitlines():
        assert line.startswith(f"{where}/data/") and Path(line).is_file()
    assert f"names = {where}/obj.names" in (where / "obj.data").read_text()
    assert _listing(tmp_path / "other") == [result.dataset_id]


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            data = b"x" if m.isfile() else None
            if data:
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


@pytest.mark.parametrize("members, why", [
    ([_member("ds/manifest.json"), _member("ds/../../evil")], "'..'"),
    ([_member("/tmp/evil-farm-test")], "absolute path"),
    ([_member("ds/link", tarfile.SYMTYPE, "/etc/passwd")], "points outside"),
    ([_member("ds/link", tarfile.SYMTYPE, "../../outside")], "points outside"),
    ([_member("ds/hard", tarfile.LNKTYPE, "/etc/passwd")], "points outside"),
    ([_member("ds/dev", tarfile.CHRTYPE)], "device"),
])
def test_extraction_refuses_unsafe_archives(tmp_path, members, why):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "dest"
    with pytest.raises(BadInput) as e:
        extract_dataset(archive, dest)
    assert why in e.value.reason and e.value.path == str(archive)
    assert _listing(dest) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-farm-test").exists()


def test_cli_package_and_export(synth_src, tmp_path):
    runner = CliRunner()
    result = runner.invoke(dataset, ["package", str(synth_src), "--root", str(tmp_path / "root"),
                                     "--valid-ratio", "0.25"])
    assert result.exit_code == 0, result.output
    obj_data = Path(result.stdout.strip().splitlines()[-1])
    assert obj_data.name == "obj.data" and obj_data.is_file()
    lint = runner.invoke(dataset, ["lint", str(obj_data), "--dialect", "alexeyab"])
    assert lint.exit_code == 0, lint.output
    out = runner.invoke(dataset, ["export", str(obj_data.parent), str(tmp_path / "a.tar.gz")])
    assert out.exit_code == 0 and (tmp_path / "a.tar.gz").is_file()


def test_cli_lint_exits_2_on_errors(tmp_path):
    (tmp_path / "obj.names").write_text("close\n")
    (tmp_path / "train.txt").write_text(f"{tmp_path}/missing.jpg\n\n")
    (tmp_path / "obj.data").write_text(f"classes = 1\ntrain = {tmp_path}/train.txt\n"
                                       f"valid = {tmp_path}/train.txt\n"
                                       f"names = {tmp_path}/obj.names\nbackup = {tmp_path}\n")
    result = CliRunner().invoke(dataset, ["lint", str(tmp_path / "obj.data")])
    assert result.exit_code == 2 and "error:" in result.stdout
