"""farm.darknet.weights on files written here byte by byte; the same checks on weights that
the real darknet wrote are in tests/integration/test_cfg_darknet.py."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from farm.darknet.cfg import Cfg
from farm.darknet.weights import (check_weights, expected_weights_bytes, iteration_of,
                                  layer_weight_counts, read_header)
from farm.errors import BadInput
from workers.micro import micro_cfg_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

# the micro cfg (workers/micro.py): conv 3→8 3×3 bn (8 + 24 + 216 = 248), maxpool,
# conv 8→16 3×3 bn (16 + 48 + 1152 = 1216), maxpool,
# conv 16→32 3×3 bn (32 + 96 + 4608 = 4736), maxpool,
# conv 32→18 1×1 (18 + 576 = 594), yolo: 6794 floats in 8 layers.
MICRO = micro_cfg_text()
MICRO_FLOATS = [248, 0, 1216, 0, 4736, 0, 594, 0]
TOTAL = sum(MICRO_FLOATS)


def write_weights(path: Path, floats: int, *, seen=0, version=(0, 2, 0), extra=b"") -> Path:
    major, minor, revision = version
    wide = major * 10 + minor >= 2
    header = struct.pack("<iii", major, minor, revision) + struct.pack("<Q" if wide else "<I",
                                                                       seen)
    path.write_bytes(header + bytes(4 * floats) + extra)
    return path


@pytest.fixture
def micro() -> Cfg:
    return Cfg.parse(MICRO, "micro.cfg")


def test_read_header_of_current_and_old_files(tmp_path):
    new = read_header(write_weights(tmp_path / "a.weights", 3, seen=640, version=(0, 2, 5)))
    assert (new.major, new.minor, new.revision, new.seen, new.header_size) == (0, 2, 5, 640, 20)
    old = read_header(write_weights(tmp_path / "b.weights", 3, seen=77, version=(0, 1, 0)))
    assert (old.seen, old.header_size) == (77, 16)


@pytest.mark.parametrize("content, message", [
    (b"", r"empty weights file \(0 bytes\)"),
    (b"\x00\x00\x00\x00\x02", "5 bytes, shorter than the 12-byte"),
    (struct.pack("<iii", 0, 2, 0) + b"\x01\x02", "truncated weights header: 14 of 20"),
])
def test_read_header_refuses_short_files(tmp_path, content, message):
    path = tmp_path / "short.weights"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        read_header(path)


def test_read_header_of_a_missing_file(tmp_path):
    with pytest.raises(BadInput, match="cannot read weights file"):
        read_header(tmp_path / "none.weights")


def test_iteration_is_seen_over_the_cfg_batch(tmp_path):
    path = write_weights(tmp_path / "w.weights", 0, seen=12)
    assert iteration_of(path, 4, 2) == 3
    assert iteration_of(path, 4) == 3
    with pytest.raises(BadInput, match="multiple of subdivisions"):
        iteration_of(path, 6, 4)


def test_expected_size_of_a_micro_net(micro):
    assert layer_weight_counts(micro) == MICRO_FLOATS
    assert expected_weights_bytes(micro) == 20 + 4 * TOTAL == 27196


@pytest.mark.parametrize("name, size", [
    # the sizes of the published AlexeyAB/pjreddie weights files for these cfgs
    ("yolov4-tiny", 24251276), ("yolov4", 257717640), ("yolov3-tiny", 35434956)])
def test_expected_size_matches_the_published_weights(name, size):
    path = SHARED / "darknet" / "cfg" / f"{name}.cfg"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not checked out beside the project)")
    assert expected_weights_bytes(Cfg.load(path), dialect="alexeyab") == size


def test_pjreddie_ignores_route_groups_so_yolov4_tiny_sizes_differ():
    path = SHARED / "darknet" / "cfg" / "yolov4-tiny.cfg"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not checked out beside the project)")
    cfg = Cfg.load(path)
    # layers 4, 12 and 20 take 2× the channels when groups=2 is ignored
    extra = 32 * 32 * 9 + 64 * 64 * 9 + 128 * 128 * 9
    assert expected_weights_bytes(cfg, dialect="pjreddie") - \
        expected_weights_bytes(cfg, dialect="alexeyab") == 4 * extra


def test_unsizable_layers_give_none(micro):
    cfg = Cfg.parse(MICRO.replace("[maxpool]", "[local]", 1))
    assert expected_weights_bytes(cfg) is None


def test_a_complete_file_fits(tmp_path, micro):
    assert check_weights(write_weights(tmp_path / "m_final.weights", TOTAL), micro) == []


def test_a_file_cut_inside_a_float_is_truncated(tmp_path, micro):
    path = write_weights(tmp_path / "m.weights", 1000, extra=b"\x00\x00")
    [f] = check_weights(path, micro)
    assert f.severity == "error" and f.reason.startswith("truncated")


def test_a_file_ending_inside_a_layer_does_not_fit(tmp_path, micro):
    [f] = check_weights(write_weights(tmp_path / "m.weights", 1000), micro)
    assert "parameters end inside layer 2 ([convolutional] at line 29)" in f.reason


def test_weights_for_more_classes_are_for_another_cfg(tmp_path, micro):
    [f] = check_weights(write_weights(tmp_path / "m.weights", TOTAL + 512 * 3), micro)
    assert "written for another cfg" in f.reason and "1536 more" in f.reason


def test_a_layer_prefix_starts_training_but_does_not_detect(tmp_path, micro):
    partial = write_weights(tmp_path / "micro.conv.2", 248)
    assert check_weights(partial, micro, for_inference=False) == []
    reasons = [f.reason for f in check_weights(partial, micro)]
    assert any("*.conv.N file holds only the first N pretrained layers" in r for r in reasons)
    assert any("holds only the first 1 of 8 layers" in r for r in reasons)
    cut = write_weights(tmp_path / "m_last.weights", 248 + 1216)
    [f] = check_weights(cut, micro)
    assert "first 3 of 8 layers" in f.reason


@pytest.mark.parametrize("content, text", [
    (b"\x00\x01\x02", "shorter than the 12-byte version header"),
    (b"abc", "a text file, not darknet weights (it starts 'abc')"),
    (struct.pack("<iiiQ", 5000, 2, 0, 0), "not a darknet weights file"),
])
def test_bad_headers_are_findings_not_exceptions(tmp_path, micro, content, text):
    path = tmp_path / "bad.weights"
    path.write_bytes(content)
    [f] = check_weights(path, micro)
    assert text in f.reason and f.severity == "error"


def test_a_missing_file_is_a_finding(tmp_path, micro):
    [f] = check_weights(tmp_path / "none.weights", micro)
    assert "cannot read weights file" in f.reason


# -- start weights: what would silently train from scratch, or from the wrong network ------


@pytest.mark.parametrize("name, make, said", [
    ("empty.weights", lambda p: p.write_bytes(b""), "empty weights file (0 bytes)"),
    ("text.weights", lambda p: p.write_text("weights go here\n"), "a text file, not darknet"),
    ("lfs.weights", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\n"
                                           "oid sha256:0\nsize 24251276\n"), "Git LFS"),
    ("header.weights", lambda p: write_weights(p, 0), "holds no parameters"),
    ("cut.weights", lambda p: write_weights(p, 1000, seen=400), "end inside layer 2"),
    ("m_last.weights", lambda p: write_weights(p, 248 + 1216, seen=400),
     "first 3 of 8 layers of micro.cfg, yet it was written while training (seen=400"),
    ("other.weights", lambda p: write_weights(p, TOTAL + 19 * 3 * 32 + 3),
     "written for another cfg"),
    ("micro.conv.4", lambda p: write_weights(p, 248), "named .conv.4 but holds only the "
                                                      "first 1 of 8"),
])
def test_bad_start_weights_are_refused_with_what_is_wrong(tmp_path, micro, name, make, said):
    path = tmp_path / name
    make(path)
    [f] = check_weights(path, micro, for_inference=False)
    assert f.severity == "error" and f.path == str(path)
    assert said in f.reason + f.fix


@pytest.mark.parametrize("name, floats", [
    ("micro.conv.1", 248), ("micro.conv.2", 248), ("micro.conv.3", 248 + 1216),
    ("micro.conv.4", 248 + 1216), ("backbone.weights", 248 + 1216),  # seen 0: darknet partial
    ("m_final.weights", TOTAL)])
def test_backbones_and_complete_weights_start_training(tmp_path, micro, name, floats):
    assert check_weights(write_weights(tmp_path / name, floats), micro,
                         for_inference=False) == []


def yolov4_tiny() -> Cfg:
    path = SHARED / "darknet" / "cfg" / "yolov4-tiny.cfg"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not checked out beside the project)")
    return Cfg.load(path)


#: The published AlexeyAB yolov4-tiny.weights is 24 251 276 bytes (20-byte header).
Y4T_ALEXEYAB = (24251276 - 20) // 4
#: pjreddie ignores groups=2 on three routes: layers 4, 12, 20 take twice the channels.
Y4T_PJREDDIE = Y4T_ALEXEYAB + 32 * 32 * 9 + 64 * 64 * 9 + 128 * 128 * 9


def test_alexeyab_weights_fit_whatever_darknet_is_installed(tmp_path):
    """The header (0.2.5) and the cfg's route groups say AlexeyAB: counted as it builds
    the network, not as the Debian darknet here would."""
    cfg = yolov4_tiny()
    path = write_weights(tmp_path / "y4t_best.weights", Y4T_ALEXEYAB, seen=64000,
                         version=(0, 2, 5))
    assert check_weights(path, cfg) == []
    assert check_weights(path, cfg, reader="alexeyab") == []  # OpenCV's network
    [f] = check_weights(path, cfg, reader="pjreddie")
    assert "pjreddie's (Debian's) darknet builds another one from it" in f.reason
    assert "--evaluator opencv" in f.fix
    # an old header (0.2.0) with the cfg's groups: AlexeyAB's layout still fits
    old = write_weights(tmp_path / "old.weights", Y4T_ALEXEYAB, version=(0, 2, 0))
    assert check_weights(old, cfg) == []


def test_pjreddie_weights_of_a_grouped_cfg_fit_its_network_only(tmp_path):
    cfg = yolov4_tiny()
    path = write_weights(tmp_path / "p_final.weights", Y4T_PJREDDIE, version=(0, 2, 0))
    assert check_weights(path, cfg) == []  # pjreddie's own layout
    assert check_weights(path, cfg, reader="pjreddie") == []
    [f] = check_weights(path, cfg, reader="alexeyab")
    assert "laid out for the network pjreddie's (Debian's) darknet builds" in f.reason
    # told they are AlexeyAB's (a run's record), they do not fit
    [f] = check_weights(path, cfg, dialect="alexeyab")
    assert "written for another cfg" in f.reason and "as AlexeyAB's darknet builds it" in f.reason
