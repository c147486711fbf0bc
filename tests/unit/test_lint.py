"""farm.datasets.lint on real files: the seed's broken lists and labels, every rule, the
label-path rules of the three dialects, and a few thousand generated label files."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm.datasets.lint import (LintReport, box_sizes, image_problem, label_path,
                                lint_list, lint_obj_data)
from farm.datasets.lint import lists as lists_module
from farm.datasets.lint.labels import LabelBatch
from farm.errors import FindingsError

GOOD_BOX = "0 0.5 0.5 0.1 0.1\n"


def make_image(path: Path, kind: str = ".jpg", size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size[1], size[0], 3), 180, np.uint8))
    return path


def make_set(root: Path, labels: dict[str, str | bytes], *, listed=None,
             list_name="train.txt", ext=".jpg") -> Path:
    """Images `<name><ext>` with the label text next to them, and a list of them."""
    for name, text in labels.items():
        make_image(root / f"{name}{ext}")
        if text is not None:
            data = text.encode() if isinstance(text, str) else text
            (root / f"{name}.txt").write_bytes(data)
    listed = listed if listed is not None else [f"{n}{ext}" for n in labels]
    list_path = root / list_name
    list_path.write_text("".join(f"{entry}\n" for entry in listed))
    return list_path


def lint(list_path, **kwargs) -> LintReport:
    kwargs = {"classes": 1, "dialect": "alexeyab", "min_images_per_class": None, **kwargs}
    return lint_list(list_path, **kwargs)


def find(report: LintReport, text: str, severity="error"):
    hits = [f for f in report.findings if text in f.reason and f.severity == severity]
    assert len(hits) == 1, f"expected one {severity} about {text!r}, got {report.findings}"
    return hits[0]


# -- the seed's mistakes ------------------------------------------------------------------


def test_seed_ds2_a_txt_entry_in_valid_txt(tmp_path):
    listed = ["a.jpg", "b.jpg", "b.txt"]
    report = lint(make_set(tmp_path, {"a": GOOD_BOX, "b": GOOD_BOX}, listed=listed,
                           list_name="valid.txt"), role="valid")
    f = find(report, "b.txt is a label file, not an image")
    assert (f.path, f.line) == (str(tmp_path / "valid.txt"), 3)
    assert f.fix == "delete line 3; list only image files"
    assert report.images == 2 and len(report.errors) == 1


def test_seed_ds4_a_blank_line_in_valid_txt(tmp_path):
    path = make_set(tmp_path, {"a": GOOD_BOX}, list_name="valid.txt")
    path.write_text("a.jpg\n\n")
    f = find(lint(path, role="valid"), "blank line")
    assert f.line == 2 and "Cannot load image" in f.reason and f.fix == "delete line 2"


@pytest.mark.parametrize("text, line, message", [
    ("1 0.5 0.5 0.1 0.1\n", 1, "class id 1 is outside 0..0 (classes=1)"),
    (GOOD_BOX + "-1 0.5 0.5 0.1 0.1\n", 2, "class id -1 is outside 0..0"),
    ("0 1.2 0.5 0.1 0.1\n", 1, "coordinates outside (0, 1]"),
    ("0 0.5 0.5 0.1 1.5\n", 1, "coordinates outside (0, 1]"),
    ("0 0.5 0.5 0.1\n", 1, "4 fields, expected 5"),
    ("0 0.5 0.5 0.1 0.1 0.3\n", 1, "6 fields, expected 5"),
    ("0 0.5 0.5 0.1 0.1 0 0.4 0.4 0.1 0.1\n\n", 1, "10 fields, expected 5"),
    ("0 0.5 0.5 0 0.1\n", 1, "zero or negative box size"),
    ("0 0.5 0.5 -0.1 0.1\n", 1, "zero or negative box size"),
    ("0 nan 0.5 0.1 0.1\n", 1, "coordinates outside (0, 1]"),
    ("0.0 0.5 0.5 0.1 0.1\n", 1, "not an integer class id"),
    ("zero 0.5 0.5 0.1 0.1\n", 1, "not an integer class id"),
    (GOOD_BOX + GOOD_BOX, 2, "same box as line 1"),
])
def test_bad_label_lines_are_refused_with_file_and_line(tmp_path, text, line, message):
    report = lint(make_set(tmp_path, {"a": text}))
    f = find(report, message)
    assert (f.path, f.line) == (str(tmp_path / "a.txt"), line)
    with pytest.raises(FindingsError) as e:
        report.raise_for_errors()
    assert e.value.findings == report.findings and message in e.value.message


def test_class_id_message_names_the_heap_corruption(tmp_path):
    f = find(lint(make_set(tmp_path, {"a": "1 0.5 0.5 0.1 0.1\n"})), "class id 1")
    assert "corrupt darknet's heap during mAP" in f.reason


def test_crlf_and_bom_label(tmp_path):
    report = lint(make_set(tmp_path, {"a": b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\r\n"}))
    assert "reads no box at all" in find(report, "byte-order mark").reason
    assert find(report, "CRLF").line == 1
    assert len(report.errors) == 2


def test_seed_ds3_whole_image_box_is_a_warning(tmp_path):
    report = lint(make_set(tmp_path, {"a": "0 0.5 0.5 1.0 1.0\n"}))
    assert "ds3" in find(report, "covers the whole image", "warning").reason
    assert report.ok and report.objects == 1


# -- lists ----------------------------------------------------------------------------------


def test_a_good_list(tmp_path):
    report = lint(make_set(tmp_path, {"a": GOOD_BOX, "b": "0 0.2 0.2 0.1 0.1\n"
                                      "0 0.7 0.7 0.2 0.2\n", "c": ""}), net_size=(416, 416))
    assert report.ok
    assert (report.images, report.labels, report.objects, report.negatives) == (3, 3, 3, 1)
    assert report.class_counts == {0: 3} and report.class_images == {0: 2}
    assert "1 of 3 images have empty label files" in find(report, "negatives",
                                                          "warning").reason


def test_duplicate_entries(tmp_path):
    path = make_set(tmp_path, {"a": GOOD_BOX}, listed=["a.jpg", "./a.jpg"])
    assert find(lint(path), "listed twice (first at line 1)").line == 2


@pytest.mark.parametrize("entry, message", [
    ("notes.md", "does not have an image extension"),
    (" a.jpg", "leading or trailing spaces"),
])
def test_entries_that_are_not_image_paths(tmp_path, entry, message):
    path = make_set(tmp_path, {"a": GOOD_BOX}, listed=[entry])
    assert find(lint(path), message).line == 1


def test_crlf_list_is_fatal_for_pjreddie_only(tmp_path):
    path = make_set(tmp_path / "images", {"a": GOOD_BOX})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(GOOD_BOX)
    path.write_bytes(b"a.jpg\r\n")
    assert "keeps the '\\r'" in find(lint(path, dialect="pjreddie"), "CRLF").reason
    assert find(lint(path, dialect="alexeyab"), "CRLF", "warning")


def test_missing_truncated_and_fake_images(tmp_path):
    labels = {"ok": GOOD_BOX, "cut": GOOD_BOX, "png": GOOD_BOX, "fake": GOOD_BOX,
              "empty": GOOD_BOX}
    path = make_set(tmp_path, labels, listed=["ok.jpg", "cut.jpg", "png.png", "fake.jpg",
                                              "empty.jpg", "gone.jpg"])
    make_image(tmp_path / "png.png")
    jpeg = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    png = (tmp_path / "png.png").read_bytes()
    (tmp_path / "png.png").write_bytes(png[:-20])
    (tmp_path / "fake.jpg").write_text("this is not a picture at all, just text")
    (tmp_path / "empty.jpg").write_bytes(b"")
    report = lint(path)
    assert find(report, "truncated JPEG").line == 2
    assert find(report, "truncated PNG").line == 3
    assert find(report, "not an image OpenCV reads").line == 4
    assert find(report, "too small to be an image").line == 5
    assert find(report, "does not exist").line == 6
    assert len(report.errors) == 5
    unchecked = lint(path, check_images=False)  # only gone.jpg's missing label is left
    assert [(f.line, f.reason[:13]) for f in unchecked.errors] == [(6, "no label file")]


def test_image_problem_accepts_what_opencv_writes(tmp_path):
    for ext in (".jpg", ".png", ".bmp", ".ppm", ".tiff", ".webp"):
        assert image_problem(str(make_image(tmp_path / f"x{ext}"))) is None, ext
    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), np.random.default_rng(0).integers(0, 255, (600, 600, 3), np.uint8))
    assert image_problem(str(big)) is None


def test_missing_label_file(tmp_path):
    report = lint(make_set(tmp_path, {"a": None}))
    f = find(report, "no label file for")
    assert f.line == 1 and "background-only" in f.reason


def test_pjreddie_reads_labels_from_labels_folder_not_next_to_the_image(tmp_path):
    path = make_set(tmp_path / "images", {"a": GOOD_BOX})
    f = find(lint(path, dialect="pjreddie"), "reads the labels of")
    assert str(tmp_path / "labels" / "a.txt") in f.reason
    assert str(tmp_path / "images" / "a.txt") in f.reason and "'images'→'labels'" in f.reason
    assert lint(path, dialect="alexeyab").ok and lint(path, dialect="hankai").ok
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(GOOD_BOX)
    assert lint(path, dialect="pjreddie").ok


@pytest.mark.parametrize("image, dialect, label", [
    ("/d/images/x.jpg", "pjreddie", "/d/labels/x.txt"),
    ("/d/VOC/JPEGImages/x.jpg", "pjreddie", "/d/VOC/labels/x.txt"),
    ("/d/drawings/x.png", "pjreddie", "/d/dlabelsings/x.txt"),  # first 'raw' anywhere
    ("/d/x.jpeg", "pjreddie", None),  # pjreddie replaces .jpg .png .JPG .JPEG only
    ("/d/images/x.jpg", "alexeyab", "/d/images/x.txt"),  # generic /images/ is commented out
    ("/d/images/train2017/x.jpg", "alexeyab", "/d/labels/train2017/x.txt"),
    ("/d/x.jpg.jpg", "alexeyab", None),  # only the first '.jpg' is looked at
    ("/d/x.gif", "alexeyab", None),
    ("/d/x.gif", "hankai", "/d/x.txt"),
    ("/d/images/x.JPEG", "hankai", "/d/images/x.txt"),
])
def test_label_path_rules(image, dialect, label):
    assert label_path(image, dialect) == label


def test_an_extension_the_dialect_cannot_map(tmp_path):
    path = make_set(tmp_path, {"a": GOOD_BOX}, ext=".jpeg")
    f = find(lint(path, dialect="pjreddie"), "cannot derive a label path")
    assert f.line == 1


def test_tiny_objects_at_the_network_size(tmp_path):
    path = make_set(tmp_path, {"a": "0 0.5 0.5 0.005 0.1\n"})
    f = find(lint(path, net_size=(416, 416)), "under 4 px", "warning")
    assert "2.1×41.6 px" in f.reason and "tile" in f.fix
    assert not lint(path).warnings  # no network size, no size rule


def test_few_images_per_class(tmp_path):
    path = make_set(tmp_path, {"a": GOOD_BOX, "b": "1 0.5 0.5 0.1 0.1\n"})
    report = lint_list(path, classes=3, dialect="alexeyab", min_images_per_class=2000)
    reasons = [f.reason for f in report.warnings]
    assert "class 0 appears in 1 training images" in reasons[0]
    assert any("class 2 appears in 0 training images" in r for r in reasons)
    valid = lint_list(path, classes=3, dialect="alexeyab", role="valid")
    assert not valid.warnings


def test_findings_per_rule_are_capped(tmp_path):
    labels = {f"i{k}": "3 0.5 0.5 0.1 0.1\n" for k in range(30)}
    report = lint(make_set(tmp_path, labels), max_findings_per_rule=5)
    assert len(report.errors) == 6
    assert report.errors[-1].reason.startswith("… and 25 more like this (30 in all)")


def test_relative_entries_resolve_from_base_dir_then_the_lists_folder(tmp_path):
    ds = tmp_path / "ds"
    path = make_set(ds, {"a": GOOD_BOX}, listed=["./ds/a.jpg"])
    assert lint(path, base_dir=tmp_path).ok
    report = lint(path)  # relative to ds/: ds/ds/a.jpg does not exist
    f = find(report, "does not exist")
    assert f"pass base_dir={tmp_path}" in f.fix
    plain = make_set(ds, {"a": GOOD_BOX}, listed=["a.jpg"])
    assert lint(plain, base_dir=tmp_path / "elsewhere").ok  # falls back to the list's folder


# -- obj.data -------------------------------------------------------------------------------


def seed_dataset(root: Path) -> Path:
    """ds2/ds4 as the seed had them: paths relative to darknet's folder, broken valid.txt."""
    ds = root / "ds"
    for name in ("t1", "t2", "v1", "v2"):
        make_image(ds / f"{name}.jpg")
        (ds / f"{name}.txt").write_text(GOOD_BOX)
    (ds / "train.txt").write_text("./ds/t1.jpg\n./ds/t2.jpg\n")
    (ds / "valid.txt").write_text("./ds/v1.jpg\n./ds/v2.jpg\n./ds/v2.txt\n\n")
    (ds / "obj.names").write_text("close\n")
    (ds / "obj.data").write_text("classes = 1\ntrain = ds/train.txt\nvalid = ds/valid.txt\n"
                                 "names = ds/obj.names\nbackup = ds/backup/\n")
    (ds / "backup").mkdir()
    return ds / "obj.data"


def test_seed_dataset_is_refused_for_its_valid_txt(tmp_path):
    report = lint_obj_data(seed_dataset(tmp_path), base_dir=tmp_path, dialect="alexeyab",
                           min_images_per_class=None)
    valid = str(tmp_path / "ds" / "valid.txt")
    assert [(f.path, f.line) for f in report.errors] == [(valid, 3), (valid, 4)]
    assert (report.images, report.objects) == (4, 4)
    with pytest.raises(FindingsError) as e:
        report.raise_for_errors()
    assert e.value.line == 3 and "is a label file, not an image" in e.value.message


def test_obj_data_without_base_dir_points_at_the_right_folder(tmp_path):
    report = lint_obj_data(seed_dataset(tmp_path), dialect="alexeyab")
    f = find(report, "train list")
    assert f"pass base_dir={tmp_path}" in f.fix


def test_obj_data_rules(tmp_path):
    ds = tmp_path
    make_set(ds, {"a": GOOD_BOX}, list_name="train.txt")
    (ds / "valid.txt").write_text("a.jpg\n")
    (ds / "obj.names").write_text("close\n\nopen\n")
    (ds / "obj.data").write_text("classes=2\ntrain=train.txt\nvalid=valid.txt\n"
                                 "names=obj.names\nbackup=backup\nvaild=x\n")
    report = lint_obj_data(ds / "obj.data", dialect="alexeyab", min_images_per_class=None)
    assert find(report, "blank line: darknet counts it as a class name").line == 2
    assert "3 names for classes=2" in find(report, "names for classes").reason
    assert find(report, "is also in the training list (line 1)").line == 1
    assert "did you mean valid" in find(report, "'vaild'", "warning").fix
    assert find(report, "backup folder", "warning").line == 5
    mismatch = lint_obj_data(ds / "obj.data", classes=1, dialect="alexeyab",
                             min_images_per_class=None)
    assert find(mismatch, "classes=2 here but the cfg trains 1").line == 1


def test_obj_data_without_valid_warns(tmp_path):
    make_set(tmp_path, {"a": GOOD_BOX})
    (tmp_path / "obj.names").write_text("close\n")
    (tmp_path / "obj.data").write_text("classes=1\ntrain=train.txt\nnames=obj.names\n")
    report = lint_obj_data(tmp_path / "obj.data", dialect="alexeyab", min_images_per_class=None)
    assert report.ok and find(report, "no valid= line", "warning")


# -- many files -----------------------------------------------------------------------------


def generated(root: Path, n: int, dialect: str) -> tuple[Path, dict[int, str]]:
    """n labelled images with known mistakes at known places."""
    rng = np.random.default_rng(7)
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    bad = {17: "2 0.5 0.5 0.1 0.1\n", 500: "0 0.5 0.5 0.1\n", 1234: "0 0.5 1.5 0.1 0.1\n",
           1501: GOOD_BOX + GOOD_BOX, 1999: "-1 0.5 0.5 0.1 0.1\n"}
    entries = []
    (root / "images").mkdir()
    os.makedirs(os.path.dirname(label_path(str(root / "images" / "x.jpg"), dialect)),
                exist_ok=True)
    for i in range(n):
        image = str(root / "images" / f"{i:05d}.jpg")
        with open(image, "wb") as f:
            f.write(jpeg)
        if i in bad:
            text = bad[i]
        elif i % 10 == 0:
            text = ""
        else:
            boxes = rng.uniform(0.2, 0.8, size=(i % 3 + 1, 2))
            text = "".join(f"{i % 2} {x:.6f} {y:.6f} 0.05 0.06\n" for x, y in boxes)
        with open(label_path(image, dialect), "w") as f:
            f.write(text)
        entries.append(image)
    path = root / "train.txt"
    path.write_text("\n".join(entries) + "\n")
    return path, bad


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
def test_thousands_of_label_files_are_counted_exactly(tmp_path, dialect, monkeypatch):
    n = 2000
    path, bad = generated(tmp_path, n, dialect)
    monkeypatch.setattr(LabelBatch, "SIZE", 300)  # several batches
    report = lint_list(path, classes=2, dialect=dialect, net_size=(416, 416),
                       min_images_per_class=None)
    good = [i for i in range(n) if i not in bad and i % 10]
    expected_objects = sum(i % 3 + 1 for i in good) + 1  # 1501 keeps one of its two boxes
    assert (report.images, report.labels) == (n, n)
    assert report.objects == expected_objects
    assert report.negatives == len([i for i in range(n) if i % 10 == 0 and i not in bad])
    assert report.class_counts[0] + report.class_counts[1] == expected_objects
    assert report.class_images[1] == len([i for i in good if i % 2])
    wrong = sorted(os.path.basename(f.path) for f in report.errors)
    assert wrong == [f"{i:05d}.txt" for i in sorted(bad)]
    # the line-by-line parser (used when the batch declines a file) agrees on everything
    monkeypatch.setattr(LabelBatch, "offer", lambda self, label, data: False)
    slow = lint_list(path, classes=2, dialect=dialect, net_size=(416, 416),
                     min_images_per_class=None)
    assert sorted(slow.findings, key=str) == sorted(report.findings, key=str)
    assert (slow.objects, slow.negatives, slow.class_counts, slow.class_images) == \
        (report.objects, report.negatives, report.class_counts, report.class_images)


def test_box_sizes_for_anchors(tmp_path):
    path = make_set(tmp_path, {"a": "0 0.5 0.5 0.1 0.2\n0 0.5 0.5 0.3 0.4\n", "b": "bad\n"})
    sizes, images = box_sizes(path, dialect="alexeyab")
    assert images == 2 and sizes.tolist() == [[0.1, 0.2], [0.3, 0.4]]


# -- memory flat in the list's length: digests, a second pass, lines streamed ----------------


def unlabelled_list(path: Path, n: int, extra=()) -> Path:
    """n distinct image paths (nothing on disk: images unchecked, labels missing)."""
    lines = [f"/nowhere/img/{i:06d}.jpg" for i in range(n)] + list(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_duplicates_in_a_long_list_name_both_lines(tmp_path):
    listed = [f"i{k}.jpg" for k in range(3000)]
    listed[2499] = "./i16.jpg"  # line 2500 repeats line 17, spelled differently
    listed[2999] = str(tmp_path / "i1199.jpg")  # line 3000 repeats line 1200, absolute
    for name in listed[:5]:
        make_image(tmp_path / name)
    path = tmp_path / "train.txt"
    path.write_text("\n".join(listed) + "\n")
    report = lint(path, check_images=False)
    dups = [(f.line, f.reason) for f in report.errors if "listed twice" in f.reason]
    assert dups == [(2500, "./i16.jpg is listed twice (first at line 17): it counts double "
                           "in training and in mAP"),
                    (3000, f"{tmp_path}/i1199.jpg is listed twice (first at line 1200): it "
                           "counts double in training and in mAP")]
    paths = report.paths  # rebuilt from the list on demand, first line of each image
    assert len(paths) == 2998 and paths[str(tmp_path / "i16.jpg")] == 17
    assert list(paths)[:2] == [str(tmp_path / "i0.jpg"), str(tmp_path / "i1.jpg")]


def test_digest_collisions_are_checked_against_the_paths(tmp_path, monkeypatch):
    """Every path hashing alike must not make every line a duplicate: the second pass
    compares the paths themselves."""
    monkeypatch.setattr(lists_module, "hash", lambda path: 7, raising=False)
    path = unlabelled_list(tmp_path / "train.txt", 50, extra=["/nowhere/img/000003.jpg"])
    dups = [f.line for f in lint(path, check_images=False).errors if "twice" in f.reason]
    assert dups == [51]


def test_train_valid_overlap_in_long_lists_names_both_lines(tmp_path):
    (tmp_path / "obj.names").write_text("close\n")
    unlabelled_list(tmp_path / "train.txt", 4000)
    valid = [f"/nowhere/img/v{i:05d}.jpg" for i in range(1000)]
    valid[600], valid[999] = "/nowhere/img/003141.jpg", "/nowhere/img/../img/000002.jpg"
    (tmp_path / "valid.txt").write_text("\n".join(valid) + "\n")
    (tmp_path / "obj.data").write_text("classes=1\ntrain=train.txt\nvalid=valid.txt\n"
                                       "names=obj.names\n")
    report = lint_obj_data(tmp_path / "obj.data", dialect="alexeyab", check_images=False,
                           min_images_per_class=None)
    both = [(f.line, f.reason.split(" is also")[0], f.reason.split("(line ")[1][:5])
            for f in report.errors if "also in the training list" in f.reason]
    assert both == [(601, "/nowhere/img/003141.jpg", "3142)"),
                    (1000, "/nowhere/img/000002.jpg", "3): i")]


def test_lines_split_across_read_blocks_are_read_whole(tmp_path, monkeypatch):
    listed = [f"dir/ünïcødé-{k}.jpg" for k in range(40)] + ["", "notes.md"]
    path = tmp_path / "train.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(listed).encode())  # BOM, CRLF, no final \n
    whole = lint(path, check_images=False)
    monkeypatch.setattr(lists_module, "LIST_BLOCK", 7)  # splits lines and UTF-8 characters
    small = lint(path, check_images=False)
    assert small.findings == whole.findings and small.images == whole.images == 40
    assert find(small, "notes.md does not have").line == 42
    assert find(small, "blank line").line == 41 and find(small, "byte-order mark").line == 1


def test_lint_memory_does_not_grow_with_the_list(tmp_path, monkeypatch):
    """100 000-image packages made the old path table grow by 0.3 KB an image; now it is
    8 bytes an image (and a sorted copy, briefly). Small read blocks, so that both lists
    span several and the block's own (constant) memory cancels out."""
    import tracemalloc
    monkeypatch.setattr(lists_module, "LIST_BLOCK", 1 << 14)

    def peak(n: int) -> int:
        path = unlabelled_list(tmp_path / f"l{n}.txt", n)
        tracemalloc.start()
        report = lint(path, check_images=False)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report.images == n and not [f for f in report.errors if "twice" in f.reason]
        return size

    small, large = peak(2_000), peak(40_000)
    assert large - small < 38_000 * 40, (small, large)  # a path table took ~200 B an image
