"""farm.darknet.cfg: parsing as darknet does, lossless edits, the rules, generation, anchors,
and the `farm cfg` commands. Upstream cfgs are read from ../shared/darknet/cfg."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from farm.darknet.cfg import (NET_KEYS, Cfg, calc_anchors, check_cfg, head_filters, make_cfg,
                              validate_net_overrides)
from farm.errors import BadInput
from workers.cli.cfg import cfg as cfg_group
from workers.micro import micro_cfg_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
UPSTREAM = SHARED / "darknet" / "cfg"


def upstream(name: str) -> Cfg:
    path = UPSTREAM / f"{name}.cfg"
    if not path.exists():
        pytest.skip(f"upstream cfg {path} is absent (../shared is not checked out beside "
                    "the project)")
    return Cfg.load(path)


def micro_text(filters=18, classes=1, head="yolo") -> str:
    """The micro cfg (workers/micro.py) at 100 iterations, its head of another type if asked."""
    text = micro_cfg_text(max_batches=100, classes=classes, filters=filters)
    return text.replace("[yolo]", f"[{head}]")


def micro(filters=18, classes=1, head="yolo", **net) -> Cfg:
    cfg = Cfg.parse(micro_text(filters, classes, head), "micro.cfg")
    for key, value in net.items():
        cfg.set_net(key, value)
    return cfg


def errors(findings, severity="error"):
    return [f for f in findings if f.severity == severity]


def only(findings, text, severity="error"):
    hits = [f for f in findings if text in f.reason and f.severity == severity]
    assert len(hits) == 1, f"expected one {severity} about {text!r}, got {findings}"
    return hits[0]


# -- parsing and round trip ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["yolov2-tiny-voc", "yolov2-voc", "yolov3-tiny",
                                  "yolov3-tiny_3l", "yolov4-custom", "yolov4-tiny-custom",
                                  "yolov4-tiny", "yolov4"])
def test_every_upstream_cfg_round_trips_byte_for_byte(name):
    cfg = upstream(name)
    assert cfg.dumps() == (UPSTREAM / f"{name}.cfg").read_text()
    assert cfg.net is not None and cfg.output_layers()


@pytest.mark.parametrize("text", [
    "[net]\r\nbatch=1\r\n\r\n[yolo]\r\nclasses=1",  # CRLF, no final newline
    "\ufeff[net]\nbatch = 1 # note\n",  # BOM and an inline comment
    "# only a comment\n\n;another\n",
    "[net]\nwidth=416\n\x0c\n\u2028weird=1\n",  # form feed / line separator are not newlines
])
def test_odd_files_round_trip_unchanged(text):
    assert Cfg.parse(text).dumps() == text


def test_keys_and_values_are_read_as_darknet_strips_them():
    cfg = Cfg.parse("[net]\n  max_batches =\t500200\nsaturation = 1.5\n[ yolo ]\nclass es=3\n")
    assert cfg.net_get("max_batches") == "500200" and cfg.max_batches == 500200
    assert cfg.net_get("saturation") == "1.5"
    assert cfg.sections[1].type == "[yolo]"  # spaces inside brackets are removed too
    assert cfg.sections[1].get("classes") == "3"  # 'class es' is the key 'classes'


def test_keys_are_case_sensitive_and_the_first_duplicate_wins():
    cfg = Cfg.parse("[net]\nBatch=4\nbatch=8\nbatch=16\n")
    assert cfg.batch == 8


def test_typed_helpers_on_yolov3_tiny():
    cfg = upstream("yolov3-tiny")
    assert (cfg.batch, cfg.subdivisions, cfg.width, cfg.height) == (1, 1, 416, 416)
    assert (cfg.max_batches, cfg.burn_in, cfg.learning_rate) == (500200, 1000, 0.001)
    assert cfg.classes == 80
    assert [s.type for s in cfg.output_layers()] == ["[yolo]", "[yolo]"]
    assert [s.line for s in cfg.output_layers()] == [132, 174]


def test_absent_keys_read_as_none():
    cfg = Cfg.parse("[net]\nwidth=64\n")
    assert cfg.max_batches is None and cfg.burn_in is None and cfg.learning_rate is None
    assert cfg.classes is None and cfg.net_get("batch", "1") == "1"


def test_set_net_replaces_in_place_keeping_spacing_and_comments():
    cfg = upstream("yolov3-tiny")
    before = cfg.lines
    cfg.set_net("max_batches", 6000)
    cfg.set_net("batch", 64)
    changed = [(a, b) for a, b in zip(before, cfg.lines) if a != b]
    assert changed == [("batch=1\n", "batch=64\n"),
                       ("max_batches = 500200\n", "max_batches = 6000\n")]
    assert "# batch=64\n" in cfg.lines  # the commented training values stay


def test_set_net_appends_a_missing_key_at_the_end_of_net_and_shifts_lines():
    cfg = Cfg.parse("[net]\nbatch=1\n\n# comment\n[yolo]\nclasses=1")
    head = cfg.output_layers()[0]
    cfg.set_net("max_batches", "6000")
    assert cfg.dumps() == "[net]\nbatch=1\nmax_batches=6000\n\n# comment\n[yolo]\nclasses=1"
    assert head.line == 6 and head.option("classes").line == 7
    head.set("random", 0)  # appended after the last line, which had no newline
    assert cfg.dumps().endswith("[yolo]\nclasses=1\nrandom=0\n")


def test_set_keeps_crlf_line_endings():
    cfg = Cfg.parse("[net]\r\nbatch=1\r\n")
    cfg.set_net("batch", 64)
    cfg.set_net("width", 416)
    assert cfg.dumps() == "[net]\r\nbatch=64\r\nwidth=416\r\n"


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path):
    cfg = micro()
    cfg.set_net("max_batches", 7)
    out = tmp_path / "gen.cfg"
    out.write_text("old")
    cfg.save(out)
    assert out.read_text() == cfg.dumps() and cfg.path == str(out)
    assert os.listdir(tmp_path) == ["gen.cfg"]
    assert Cfg.load(out).max_batches == 7


def test_load_of_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot read cfg"):
        Cfg.load(tmp_path / "nope.cfg")


# -- --set key=value ------------------------------------------------------------------------


def test_net_keys_cover_what_darknet_reads_for_training():
    for key in ("batch subdivisions width height channels momentum decay angle saturation "
                "exposure hue learning_rate burn_in power max_batches policy steps scales "
                "step scale gamma mosaic letter_box flip blur").split():
        assert key in NET_KEYS


def test_validate_net_overrides_normalises_good_values():
    assert validate_net_overrides({" max_batches ": " 6000 ", "steps": "4800, 5400",
                                   "learning_rate": "1e-3", "policy": "steps"}) == \
        {"max_batches": "6000", "steps": "4800,5400", "learning_rate": "1e-3",
         "policy": "steps"}


@pytest.mark.parametrize("overrides, message, hint", [
    ({"max_batch": "6000"}, "max_batch: not a [net] key", "max_batches"),
    ({"Batch": "64"}, "Batch: not a [net] key", "batch"),
    ({"batch": "6.5"}, "batch=6.5", "integer"),
    ({"learning_rate": "fast"}, "learning_rate=fast", "number"),
    ({"steps": "4800;5400"}, "steps=4800;5400", "commas"),
    ({"policy": "cosine"}, "unknown policy", "steps"),
    ({"subdivisions": "0"}, "greater than 0", "integer"),
    ({"burn_in": "-5"}, "must not be negative", "integer"),
    ({"momentum": "nan"}, "not finite", "number"),
])
def test_validate_net_overrides_refuses_unknown_keys_and_bad_values(overrides, message, hint):
    with pytest.raises(BadInput) as e:
        validate_net_overrides(overrides)
    assert message in e.value.message and hint in e.value.hint


# -- check_cfg ------------------------------------------------------------------------------


def test_a_correct_micro_cfg_has_no_findings():
    assert check_cfg(micro()) == []


def test_seed_ds2_filters_left_at_255_for_one_class():
    findings = check_cfg(micro(filters=255))
    f = only(findings, "filters=255")
    assert f.line == 57 and "should be 18" in f.reason and "(classes 1 + 5) × 3 masks" in f.reason
    assert f.fix == "set filters=18 at line 57"


@pytest.mark.parametrize("head, dialect, filters", [
    ("Gaussian_yolo", "alexeyab", 30),  # (1 + 9) × 3
    ("region", "pjreddie", 18),  # (1 + 4 + 1) × num 3
])
def test_filters_rule_of_other_heads(head, dialect, filters):
    assert not errors(check_cfg(micro(filters=filters, head=head), dialect=dialect))
    f = only(check_cfg(micro(filters=filters + 1, head=head), dialect=dialect), "filters=")
    assert f"should be {filters}" in f.reason


def test_yolo_without_mask_uses_num():
    cfg = Cfg.parse(micro_text().replace("mask=0,1,2\n", ""))
    assert head_filters(cfg.output_layers()[0]) == 18 and not errors(check_cfg(cfg))


def test_classes_must_agree_in_every_head():
    cfg = upstream("yolov3-tiny")
    cfg.output_layers()[0].set("classes", 1)
    findings = check_cfg(cfg, dialect="alexeyab")
    f = only(findings, "the last detection layer has classes=80")
    assert f.line == 135
    assert any("filters=255" in g.reason and "should be 18" in g.reason for g in findings)


def test_test_time_batch_left_in_is_an_error_only_for_training():
    cfg = micro(batch=1, subdivisions=1)
    assert "test-time" in only(check_cfg(cfg), "batch=1 subdivisions=1").reason
    assert not errors(check_cfg(cfg, training=False))


def test_batch_must_be_a_multiple_of_subdivisions():
    f = only(check_cfg(micro(batch=10, subdivisions=4)), "not a multiple of subdivisions")
    assert f.line == 3


@pytest.mark.parametrize("dialect, strict, severity", [
    ("pjreddie", False, "warning"), ("alexeyab", False, "warning"),
    ("hankai", False, "error"), ("pjreddie", True, "error")])
def test_width_not_a_multiple_of_32(dialect, strict, severity):
    findings = check_cfg(micro(width=100), dialect=dialect, strict_size=strict)
    f = only(findings, "width=100 is not a multiple of 32", severity)
    assert f.line == 5 and f.fix == "use width=96"


def test_steps_must_ascend_stay_below_max_batches_and_match_scales():
    findings = check_cfg(micro(steps="90,80,150", scales=".1,.1"))
    assert only(findings, "not in ascending order").line == 14
    assert "150" in only(findings, "not below max_batches=100").reason
    assert only(findings, "3 steps but 2 scales").line == 15


def test_policy_steps_without_steps():
    cfg = Cfg.parse(micro_text().replace("steps=80,90\n", ""))
    assert "STEPS policy must have steps and scales" in only(check_cfg(cfg), "policy=steps").reason


def test_no_detection_layer_is_an_error():
    cfg = Cfg.parse("[net]\nbatch=64\nsubdivisions=16\nwidth=64\nheight=64\nmax_batches=10\n"
                    "[convolutional]\nfilters=8\n")
    only(check_cfg(cfg), "no [yolo] or [region] layer")


@pytest.mark.parametrize("section, dialect, text", [
    ("Gaussian_yolo", "pjreddie", "AlexeyAB layer"),
    ("sam", "pjreddie", "Type not recognized"),
    ("Yolo", "alexeyab", "case matters"),
    ("yolov4", "alexeyab", "not a layer type"),
])
def test_unknown_section_types(section, dialect, text):
    cfg = micro()
    cfg.sections[1].type = f"[{section}]"  # as if the file said so
    f = only(check_cfg(cfg, dialect=dialect), text)
    assert f.line == 17


def test_alexeyab_layers_are_fine_for_alexeyab():
    assert not errors(check_cfg(micro(filters=30, head="Gaussian_yolo"), dialect="alexeyab"))


def test_yolov4_on_pjreddie_mish_and_grouped_routes_are_reported_once_each():
    full = check_cfg(upstream("yolov4-custom"), dialect="pjreddie")
    f = only(full, "activation=mish")
    assert "72 layers" in f.reason and "ReLU" in f.reason and f.line == 36
    tiny = check_cfg(upstream("yolov4-tiny-custom"), dialect="pjreddie")
    f = only(tiny, "groups=")
    assert "3 layers, lines 51, 98, 145" in f.reason
    assert not errors(check_cfg(upstream("yolov4-tiny-custom"), dialect="alexeyab"))


def test_pjreddie_random_1_warning():
    f = only(check_cfg(upstream("yolov3-tiny")), "random=1", "warning")
    assert f.line == 182 and "608" in f.reason
    assert check_cfg(upstream("yolov3-tiny"), training=False) == []


def test_text_level_problems():
    text = micro_text()
    crlf = check_cfg(Cfg.parse(text.replace("\n", "\r\n")), dialect="pjreddie")
    assert "First section must be [net]" in only(crlf, "CRLF").reason
    assert not errors(check_cfg(Cfg.parse(text.replace("\n", "\r\n")), dialect="alexeyab"))
    bom = check_cfg(Cfg.parse("\ufeff" + text))
    assert only(bom, "byte-order mark").line == 1
    stray = check_cfg(Cfg.parse("batch=64\n" + text))
    assert only(stray, "before the first [section]").line == 1
    broken = check_cfg(Cfg.parse(text.replace("channels=3", "channels 3")))
    assert only(broken, "cannot parse 'channels 3'").line == 7


def test_duplicate_keys_and_unknown_net_keys():
    cfg = micro()
    cfg.sections[1].set("filterz", 8)
    cfg.set_net("max_batch", 6000)
    text = cfg.dumps().replace("size=3\n", "size=3\nsize=5\n", 1)
    findings = check_cfg(Cfg.parse(text))
    assert "darknet uses the first, size=3" in only(findings, "sets size twice", "warning").reason
    assert "max_batches" in only(findings, "'max_batch'", "warning").fix
    assert only(check_cfg(Cfg.parse(text), dialect="hankai"), "sets size twice").severity == "error"


# -- make_cfg -------------------------------------------------------------------------------


def changed_lines(base: Cfg, made: Cfg) -> list[str]:
    return [line for line in difflib.unified_diff(base.lines, made.lines, n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_make_cfg_from_yolov3_tiny_changes_only_what_it_must():
    base = upstream("yolov3-tiny")
    made = make_cfg(base, classes=1)
    assert changed_lines(base, made) == [
        "-batch=1\n", "-subdivisions=1\n", "+batch=64\n", "+subdivisions=16\n",
        "-max_batches = 500200\n", "+max_batches = 6000\n",
        "-steps=400000,450000\n", "+steps=4800,5400\n",
        "-filters=255\n", "+filters=18\n", "-classes=80\n", "+classes=1\n",
        "-filters=255\n", "+filters=18\n", "-classes=80\n", "+classes=1\n"]
    assert made.lines[1:7] == ["# Testing\n", "batch=64\n", "subdivisions=16\n",
                               "# Training\n", "# batch=64\n", "# subdivisions=2\n"]
    assert not errors(check_cfg(made, dialect="pjreddie"))
    assert base.batch == 1  # the base is not modified


def test_make_cfg_from_yolov2_tiny_voc_region():
    made = make_cfg(upstream("yolov2-tiny-voc"), classes=3, width=96, height=96, batch=8,
                    subdivisions=2)
    head = made.output_layers()[0]
    assert head.get("classes") == "3" and made.conv_before(head).get("filters") == "40"
    assert made.net_get("steps") == "4800,5400" and made.net_get("scales") == ".1,.1"
    assert (made.width, made.height, made.batch, made.subdivisions) == (96, 96, 8, 2)
    assert not errors(check_cfg(made, dialect="pjreddie"))


@pytest.mark.parametrize("name, heads", [("yolov4-tiny-custom", 2), ("yolov4-custom", 3),
                                         ("yolov4", 3)])
def test_yolov4_family_is_generated_right_in_every_head(name, heads):
    made = make_cfg(upstream(name), classes=4, width=416, height=416)
    yolo = made.output_layers()
    assert len(yolo) == heads
    for head in yolo:
        assert head.get("classes") == "4"
        assert made.conv_before(head).get("filters") == str((4 + 5) * 3)
    assert (made.batch, made.subdivisions, made.max_batches) == (64, 16, 8000)
    assert made.net_get("steps") == "6400,7200"
    assert check_cfg(made, dialect="alexeyab") == []


@pytest.mark.parametrize("classes, train_images, expected", [
    (1, 0, 6000), (5, 0, 10000), (1, 20000, 20000)])
def test_default_max_batches(classes, train_images, expected):
    made = make_cfg(micro(), classes=classes, train_images=train_images)
    assert made.max_batches == expected
    assert made.steps == [int(expected * .8), int(expected * .9)]


def test_make_cfg_sets_learning_rate_and_burn_in():
    made = make_cfg(micro(), classes=1, learning_rate=0.0005, burn_in=200, max_batches=1000)
    assert (made.learning_rate, made.burn_in, made.max_batches) == (0.0005, 200, 1000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100), "width=100 is not a multiple of 32"),
    (dict(height=0), "height=0 must be an integer"),
    (dict(batch=1, subdivisions=1), "test-time setting"),
    (dict(batch=64, subdivisions=10), "not a multiple of subdivisions"),
    (dict(classes=0), "classes=0"),
])
def test_make_cfg_refuses_bad_values(kwargs, message):
    kwargs = {"classes": 1, **kwargs}
    with pytest.raises(BadInput, match=message):
        make_cfg(micro(), **kwargs)


def test_anchors_are_shared_out_coarse_heads_taking_the_large_ones():
    anchors = [(100, 200), (5, 6), (20, 30), (10, 12), (80, 90), (40, 40)]
    made = make_cfg(upstream("yolov3-tiny"), classes=2, anchors=anchors)
    first, second = made.output_layers()  # first is the coarse 13×13 head (mask 3,4,5)
    assert first.get("anchors") == "5,6,10,12,20,30,40,40,80,90,100,200"
    assert (first.get("mask"), second.get("mask")) == ("3,4,5", "0,1,2")
    nine = make_cfg(upstream("yolov3-tiny"), classes=2, anchors=[(i, i) for i in range(1, 9)])
    heads = nine.output_layers()
    assert [h.get("mask") for h in heads] == ["4,5,6,7", "0,1,2,3"]
    assert [nine.conv_before(h).get("filters") for h in heads] == ["28", "28"]  # (2+5)×4
    assert not errors(check_cfg(nine))
    with pytest.raises(BadInput, match="cannot be shared by 2"):
        make_cfg(upstream("yolov3-tiny"), classes=2, anchors=[(1, 1)] * 5)


def test_region_anchors_are_written_in_grid_cells():
    made = make_cfg(upstream("yolov2-tiny-voc"), classes=1, anchors=[(32, 64), (16, 16)])
    head = made.output_layers()[0]
    assert head.get("anchors") == "0.5000,0.5000,1.0000,2.0000" and head.get("num") == "2"
    assert made.conv_before(head).get("filters") == "12"


# -- calc_anchors ---------------------------------------------------------------------------


def test_calc_anchors_finds_the_clusters_sorted_by_area():
    rng = np.random.default_rng(1)
    centers = np.array([[12, 10], [40, 44], [120, 90]])
    boxes = np.concatenate([c * rng.uniform(0.9, 1.1, size=(200, 2)) for c in centers])
    found = calc_anchors(boxes, 3, 416, 416)
    assert len(found) == 3
    for (w, h), (cw, ch) in zip(found, centers):
        assert abs(w - cw) <= 3 and abs(h - ch) <= 3
    assert found == calc_anchors(boxes, 3, 416, 416)  # deterministic for a seed


def test_calc_anchors_needs_enough_boxes():
    with pytest.raises(BadInput, match="too few"):
        calc_anchors(np.array([[10, 10]]), 3, 416, 416)


# -- farm cfg make / check --------------------------------------------------------------------


def test_cli_make_writes_a_checked_cfg(tmp_path):
    base = UPSTREAM / "yolov3-tiny.cfg"
    upstream("yolov3-tiny")
    names = tmp_path / "obj.names"
    names.write_text("close\nopen\n")
    out = tmp_path / "gen.cfg"
    result = CliRunner().invoke(cfg_group, ["make", str(base), "-o", str(out), "--names",
                                            str(names), "--width", "96", "--height", "96",
                                            "--batch", "8", "--subdivisions", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: classes=2, 96×96, batch=8/2, max_batches=6000" in result.output
    made = Cfg.load(out)
    assert made.classes == 2 and made.width == 96
    check = CliRunner().invoke(cfg_group, ["check", str(out)])
    assert check.exit_code == 0 and "0 errors" in check.output


def test_cli_check_prints_every_finding_and_exits_2(tmp_path):
    path = tmp_path / "bad.cfg"
    micro(filters=255, batch=1, subdivisions=1).save(path)
    result = CliRunner().invoke(cfg_group, ["check", str(path)])
    assert result.exit_code == 2
    assert f"{path}:57: error: filters=255" in result.output
    assert f"{path}:3: error: batch=1 subdivisions=1" in result.output
    assert "2 errors" in result.output


def test_cli_make_refuses_a_cfg_the_dialect_cannot_train(tmp_path):
    upstream("yolov4-tiny-custom")
    out = tmp_path / "gen.cfg"
    result = CliRunner().invoke(cfg_group, ["make", str(UPSTREAM / "yolov4-tiny-custom.cfg"),
                                            "-o", str(out), "--classes", "1"])
    assert result.exit_code == 2 and "groups=" in result.output and not out.exists()
    ok = CliRunner().invoke(cfg_group, ["make", str(UPSTREAM / "yolov4-tiny-custom.cfg"),
                                        "-o", str(out), "--classes", "1", "--dialect",
                                        "alexeyab"])
    assert ok.exit_code == 0 and out.exists()


def test_cli_errors_propagate_as_farm_errors(tmp_path):
    result = CliRunner().invoke(cfg_group, ["make", str(tmp_path / "none.cfg"), "-o",
                                            str(tmp_path / "x.cfg"), "--classes", "1"])
    assert isinstance(result.exception, BadInput) and "cannot read cfg" in str(result.exception)
    upstream("yolov3-tiny")
    names = tmp_path / "obj.names"
    names.write_text("a\nb\n")
    result = CliRunner().invoke(cfg_group, ["make", str(UPSTREAM / "yolov3-tiny.cfg"), "-o",
                                            str(tmp_path / "x.cfg"), "--classes", "3",
                                            "--names", str(names)])
    assert isinstance(result.exception, BadInput) and "lists 2 names" in str(result.exception)


def test_cli_make_computes_anchors_from_the_training_labels(tmp_path):
    import cv2
    upstream("yolov3-tiny")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(30):
        image = tmp_path / f"{i}.jpg"
        cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
        size = [0.05, 0.2, 0.6][i % 3] * rng.uniform(0.95, 1.05)
        (tmp_path / f"{i}.txt").write_text(f"0 0.5 0.5 {size:.4f} {size:.4f}\n")
        lines.append(f"{i}.jpg")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "obj.data").write_text("classes=1\ntrain=train.txt\n")
    out = tmp_path / "gen.cfg"
    result = CliRunner().invoke(cfg_group, [
        "make", str(UPSTREAM / "yolov3-tiny.cfg"), "-o", str(out), "--classes", "1",
        "--width", "320", "--height", "320", "--anchors-from", str(tmp_path / "obj.data"),
        "--anchors", "6", "--dialect", "alexeyab"])
    assert result.exit_code == 0, result.output
    made = Cfg.load(out)
    values = [float(v) for v in made.output_layers()[0].get("anchors").split(",")]
    assert len(values) == 12 and values == sorted(values)
    assert made.max_batches == 6000  # 30 training images counted, below the 6000 floor


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab", "hankai"])
def test_a_value_only_key_changes_no_finding_but_the_one_on_its_own_value(dialect):
    """What lets a sweep check each distinct learning rate once (farm.sweeps.controller
    .plan): for these keys, check_cfg's findings are the cfg's without them plus the one
    net_value_finding gives. A rule that reads one of them with another key breaks this."""
    from farm.darknet.cfg import VALUE_ONLY, net_value_finding
    text = micro_text()
    for bad in ("", "batch=1\nsubdivisions=1\n", "width=100\nburn_in=5000\n"):
        base = Cfg.parse(text.replace("[net]\n", "[net]\n" + bad), "micro.cfg")
        for key in sorted(VALUE_ONLY):
            reference = None
            for value in ("0.001", "0.9", "0", "-1", "2", "abc", "1e9", "0.5#x", "5"):
                cfg = base.copy()
                cfg.set_net(key, value)
                found = {(f.line, f.reason, f.severity) for f in
                         check_cfg(cfg, training=True, dialect=dialect)}
                own = net_value_finding(cfg, key, value)
                others = found - ({(own.line, own.reason, own.severity)} if own else set())
                others = {f for f in others if f"{key}=" not in f[1]}
                reference = others if reference is None else reference
                assert others == reference, (key, value)
                assert (own is not None) == any(f[1].startswith(f"{key}={value} in [net]")
                                                for f in found), (key, value)
