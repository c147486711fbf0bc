"""Generated cfgs, the cfg rules and the weights checks against Debian's real darknet
(pjreddie dialect, CPU, no BLAS): what check_cfg calls fatal, darknet refuses; what
make_cfg writes, darknet trains; what darknet writes, weights.py sizes to the byte."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm.darknet.cfg import Cfg, check_cfg, make_cfg
from farm.darknet.weights import (check_weights, expected_weights_bytes, iteration_of,
                                  read_header)
from farm.datasets.lint import lint_obj_data
from workers.micro import micro_cfg_text

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
UPSTREAM = SHARED / "darknet" / "cfg"
DARKNET = shutil.which("darknet")
ITERATION = re.compile(r"^(\d+): ([-\w.]+), ([-\w.]+) avg, ([-\w.]+) rate", re.M)

needs_darknet = pytest.mark.skipif(DARKNET is None, reason="Debian's darknet is not installed "
                                   "(apt-get install darknet)")

MICRO = micro_cfg_text(max_batches=3)  # the micro cfg (workers/micro.py), 6794 floats


def upstream(name: str) -> Cfg:
    path = UPSTREAM / f"{name}.cfg"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not checked out beside the project)")
    return Cfg.load(path)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Four 96×96 images of a dark square; labels where pjreddie looks (images→labels)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(4):
        image = tmp_path / "data" / "images" / f"{i}.jpg"
        label = tmp_path / "data" / "labels" / f"{i}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        canvas = np.full((96, 96, 3), 255, np.uint8)
        x, y = (int(v) for v in rng.integers(8, 64, 2))
        cv2.rectangle(canvas, (x, y), (x + 24, y + 24), (0, 0, 0), 3)
        cv2.imwrite(str(image), canvas)
        label.write_text(f"0 {(x + 12) / 96:.6f} {(y + 12) / 96:.6f} 0.25 0.25\n")
        entries.append(str(image))
    (tmp_path / "train.txt").write_text("\n".join(entries) + "\n")
    (tmp_path / "obj.names").write_text("close\n")
    (tmp_path / "backup").mkdir()
    data = tmp_path / "obj.data"
    data.write_text(f"classes=1\ntrain={tmp_path}/train.txt\nvalid={tmp_path}/train.txt\n"
                    f"names={tmp_path}/obj.names\nbackup={tmp_path}/backup\n")
    return data


def train(data: Path, cfg_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`darknet detector train`, line-buffered (pjreddie never flushes its stdout)."""
    argv = [DARKNET, "detector", "train", str(data), str(cfg_path)]
    if shutil.which("stdbuf"):
        argv = ["stdbuf", "-oL", "-eL"] + argv
    return subprocess.run(argv, cwd=data.parent, capture_output=True, text=True,
                          errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)


def save(cfg: Cfg, path: Path) -> Path:
    cfg.save(path)
    return path


# -- generated cfgs train -------------------------------------------------------------------


@needs_darknet
@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov2-tiny-voc"])
def test_generated_cfg_trains_one_iteration_on_debian_darknet(dataset, name):
    made = make_cfg(upstream(name), classes=1, width=96, height=96, batch=2, subdivisions=1,
                    max_batches=1)
    for head in made.output_layers():
        # random=1 makes pjreddie train at 608×608 near max_batches (check_cfg warns): slow
        head.set("random", 0)
    assert not [f for f in check_cfg(made, dialect="pjreddie") if f.severity == "error"]
    assert lint_obj_data(dataset, classes=1, min_images_per_class=None).ok
    cfg_path = save(made, dataset.parent / "gen.cfg")

    run = train(dataset, cfg_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert [m.group(1) for m in ITERATION.finditer(run.stdout)] == ["1"], run.stdout[-2000:]
    weights = dataset.parent / "backup" / "gen_final.weights"
    assert f"Saving weights to {weights}" in run.stderr
    assert weights.stat().st_size == expected_weights_bytes(made, dialect="pjreddie")
    assert check_weights(weights, made) == []
    assert iteration_of(weights, made.batch, made.subdivisions) == 1


# -- weights darknet wrote ------------------------------------------------------------------


@needs_darknet
def test_weights_written_by_darknet_are_sized_and_checked(dataset, tmp_path):
    cfg = Cfg.parse(MICRO, str(tmp_path / "micro.cfg"))
    run = train(dataset, save(cfg, tmp_path / "micro.cfg"))
    assert [m.group(1) for m in ITERATION.finditer(run.stdout)] == ["1", "2", "3"], run.stderr
    weights = tmp_path / "backup" / "micro_final.weights"

    header = read_header(weights)
    assert (header.major, header.minor, header.revision) == (0, 2, 0)  # pjreddie's version
    assert header.seen == 12 and iteration_of(weights, 4, 1) == 3  # seen = 3 × batch 4
    assert weights.stat().st_size == expected_weights_bytes(cfg) == 20 + 4 * 6794
    assert check_weights(weights, cfg) == []

    truncated = tmp_path / "truncated.weights"
    truncated.write_bytes(weights.read_bytes()[:-1000])
    [f] = check_weights(truncated, cfg)
    assert "its 6544 parameters end inside layer 6 ([convolutional] at line 53)" in f.reason

    other = Cfg.parse(micro_cfg_text(max_batches=3, classes=2), str(tmp_path / "two.cfg"))
    [f] = check_weights(weights, other)
    assert "its 6794 parameters end inside layer 6" in f.reason and f.severity == "error"


@needs_darknet
def test_darknet_partial_files_start_training_but_are_refused_for_detection(dataset, tmp_path):
    cfg = Cfg.parse(MICRO, str(tmp_path / "micro.cfg"))
    train(dataset, save(cfg, tmp_path / "micro.cfg"))
    partial = tmp_path / "micro.conv.3"
    subprocess.run([DARKNET, "partial", str(tmp_path / "micro.cfg"),
                    str(tmp_path / "backup" / "micro_final.weights"), str(partial), "3"],
                   cwd=tmp_path, capture_output=True, timeout=60, check=True)
    assert partial.stat().st_size == 20 + 4 * (248 + 1216)  # layers 0..2
    assert check_weights(partial, cfg, for_inference=False) == []
    reasons = [f.reason for f in check_weights(partial, cfg)]
    assert any("*.conv.N" in r for r in reasons) and any("first 3 of 8" in r for r in reasons)


# -- what check_cfg calls fatal, darknet refuses --------------------------------------------


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


BROKEN = {
    # (edit of the micro cfg, text check_cfg reports, what Debian's darknet does)
    "filters_mismatch": (lambda t: t.replace("filters=18", "filters=21"), "should be 18",
                         "Assertion `l.outputs == params.inputs' failed"),
    "sam_layer": (lambda t: t.replace("[maxpool]", "[sam]", 1), "[sam]",
                  "Type not recognized: [sam]"),
    "gaussian_yolo": (lambda t: t.replace("[yolo]", "[Gaussian_yolo]"), "AlexeyAB layer",
                      "Type not recognized: [Gaussian_yolo]"),
    "case_of_yolo": (lambda t: t.replace("[yolo]", "[Yolo]"), "case matters",
                     "Type not recognized: [Yolo]"),
    "crlf": (_crlf, "CRLF", "First section must be [net] or [network]"),
}


@needs_darknet
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cfg_errors_are_fatal_to_debian_darknet(dataset, tmp_path, case):
    edit, reported, darknet_says = BROKEN[case]
    text = edit(MICRO)
    cfg = Cfg.parse(text, str(tmp_path / "broken.cfg"))
    assert any(reported in f.reason for f in check_cfg(cfg, dialect="pjreddie")
               if f.severity == "error")
    (tmp_path / "broken.cfg").write_bytes(text.encode())

    run = train(dataset, tmp_path / "broken.cfg")

    assert darknet_says in run.stderr
    assert run.returncode != 0  # SIGABRT (assert) or SIGSEGV (empty layer)
    assert not (tmp_path / "backup" / "broken_final.weights").exists()


@needs_darknet
def test_ignored_route_groups_change_the_network_darknet_builds(dataset, tmp_path):
    """yolov4-tiny 'trains' on Debian's darknet, but as another network: its weights have
    the size weights.py predicts for pjreddie, not AlexeyAB's."""
    made = make_cfg(upstream("yolov4-tiny-custom"), classes=1, width=64, height=64, batch=2,
                    subdivisions=1, max_batches=1)
    assert any("groups=" in f.reason for f in check_cfg(made, dialect="pjreddie"))
    run = train(dataset, save(made, tmp_path / "y4t.cfg"))
    assert "Unused field: 'groups = 2'" in run.stderr
    weights = tmp_path / "backup" / "y4t_final.weights"
    size = weights.stat().st_size
    assert size == expected_weights_bytes(made, dialect="pjreddie")
    assert size != expected_weights_bytes(made, dialect="alexeyab")
    assert check_weights(weights, made, dialect="alexeyab")[0].reason.startswith(
        "written for another cfg")


def test_header_layout_matches_the_doc(tmp_path):
    """darknet.md §4: int32 ×3, then seen as uint64 from version 0.2."""
    path = tmp_path / "w.weights"
    path.write_bytes(struct.pack("<iiiQ", 0, 2, 5, 80))
    assert read_header(path).seen == 80 and iteration_of(path, 8) == 10
