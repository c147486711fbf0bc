"""Values darknet would misread (atoi/atof) or could never train are refused with their
line, in the cfg and in `--set` alike (farm.darknet.cfg.values)."""
from __future__ import annotations

from pathlib import Path

import pytest

from farm.darknet.cfg import Cfg, check_cfg, validate_net_overrides
from farm.darknet.cfg.values import atoi, value_problem
from farm.errors import BadInput
from workers.micro import micro_cfg_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def micro(**edits: str) -> Cfg:
    text = micro_cfg_text()
    for old, new in edits.items():
        text = text.replace(old.replace("_", "="), new, 1)
    return Cfg.parse(text, "micro.cfg")


def line_of(cfg: Cfg, text: str) -> int:
    return next(n for n, raw in enumerate(cfg.lines, 1) if raw.strip() == text)


@pytest.mark.parametrize("old, new, said", [
    ("width=64", "width=1e9", "'1e9' is not an integer: darknet reads it as 1"),
    ("height=64", "height=99999", "99999 is beyond what darknet can train (at most 8192)"),
    ("batch=4", "batch=abc", "'abc' is not an integer: darknet reads it as 0"),
    ("subdivisions=1", "subdivisions=0", "must be greater than 0"),
    ("channels=3", "channels=300", "300 is beyond"),
    ("max_batches=60", "max_batches=60000000", "60000000 is beyond"),
    ("size=3", "size=abc", "'abc' is not an integer: darknet reads it as 0"),
    ("filters=8", "filters=8.5", "'8.5' is not an integer: darknet reads it as 8"),
    ("filters=8", "filters=100000", "100000 is beyond"),
    ("stride=1", "stride=0", "must be greater than 0"),
    ("learning_rate=0.001", "learning_rate=fast", "'fast' is not a number"),
    ("momentum=0.9", "momentum=nan", "not finite"),
    ("decay=0.0005", "decay=-1", "must not be negative"),
    ("classes=1", "classes=0", "must be greater than 0"),
    ("mask=0,1,2", "mask=0,x,2", "'x' is not an integer"),
    ("anchors=8,8, 16,16, 24,24", "anchors=8,8,16,16,24,abc", "'abc' is not a number"),
])
def test_a_misread_or_absurd_value_is_an_error_at_its_line(old, new, said):
    cfg = Cfg.parse(micro().dumps().replace(old, new, 1), "micro.cfg")
    line = line_of(cfg, new)
    errors = [f for f in check_cfg(cfg, dialect="pjreddie") if f.severity == "error"]
    mine = [f for f in errors if f.line == line]
    assert mine and said in mine[0].reason, errors
    key = new.split("=")[0]
    assert mine[0].reason.startswith(f"{new.replace(' ', '')} in [")
    assert key in mine[0].fix


def test_one_finding_per_value_not_a_second_for_the_size_rule():
    cfg = Cfg.parse(micro().dumps().replace("width=64", "width=1e9"), "m.cfg")
    at = [f for f in check_cfg(cfg) if f.line == line_of(cfg, "width=1e9")]
    assert len(at) == 1


@pytest.mark.parametrize("name", ["yolov2-tiny-voc", "yolov2-voc", "yolov3-tiny",
                                  "yolov3-tiny_3l", "yolov4-custom", "yolov4-tiny-custom",
                                  "yolov4-tiny", "yolov4"])
def test_no_upstream_cfg_has_a_value_refused(name):
    path = SHARED / "darknet" / "cfg" / f"{name}.cfg"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not checked out beside the project)")
    cfg = Cfg.load(path)
    values = [f for f in check_cfg(cfg, dialect="alexeyab") if " in [" in f.reason]
    assert values == []


@pytest.mark.parametrize("key, value, said", [
    ("width", "99999", "99999 is beyond what darknet can train (at most 8192)"),
    ("width", "1e9", "'1e9' is not an integer: darknet reads it as 1"),
    ("height", "abc", "'abc' is not an integer"),
    ("batch", "0", "must be greater than 0"),
    ("subdivisions", "5000", "5000 is beyond"),
    ("max_batches", "1e6", "'1e6' is not an integer"),
    ("steps", "100,x", "'x' is not an integer"),
    ("momentum", "inf", "not finite"),
])
def test_every_set_value_is_checked_as_in_the_cfg(key, value, said):
    with pytest.raises(BadInput) as e:
        validate_net_overrides({key: value})
    assert said in e.value.reason and e.value.reason.startswith(f"--set {key}={value}: ")
    assert key in e.value.hint
    # the same rule as in a cfg file
    assert value_problem("net", key, value) in e.value.reason


def test_set_of_a_layer_key_is_refused_as_not_a_net_key():
    with pytest.raises(BadInput, match="--set size: not a \\[net\\] key"):
        validate_net_overrides({"size": "abc"})


def test_values_that_are_fine():
    assert validate_net_overrides({"width": " 416 ", "learning_rate": "1e-3",
                                   "steps": "4800,5400", "scales": ".1,.1"}) == {
        "width": "416", "learning_rate": "1e-3", "steps": "4800,5400", "scales": ".1,.1"}
    assert value_problem("upsample", "stride", "-2") is None  # a negative one downsamples
    assert value_problem("yolo", "mask", "0,1,2,") is None  # darknet stops at the comma
    assert value_problem("net", "width", "416#comment") is None  # check_cfg warns instead
    assert atoi("1e9") == 1 and atoi("abc") == 0 and atoi(None) is None


def test_cfg_check_prints_the_memory_and_refuses_above_a_limit(tmp_path):
    from click.testing import CliRunner
    from farm.darknet.memory import estimate, size_text
    from workers.cli.cfg import cfg as cfg_group
    path = tmp_path / "m.cfg"
    big = micro(width_64="width=1024", height_64="height=1024")
    big.save(path)
    need = estimate(big, dialect="pjreddie")
    ok = CliRunner().invoke(cfg_group, ["check", str(path)])
    assert ok.exit_code == 0
    assert f"{path}: training needs about {size_text(need.host)} at 1024×1024" in ok.output
    refused = CliRunner().invoke(cfg_group, ["check", str(path), "--memory", "100MB"])
    assert refused.exit_code == 2 and f"{path}:5: error: training needs about" in refused.output
    assert "the limit given (--memory) has 100 MB" in refused.output
    gpu = CliRunner().invoke(cfg_group, ["check", str(path), "--gpu", "--memory", "80GB"])
    assert gpu.exit_code == 0 and "CUDA context" in gpu.output
    bad = CliRunner().invoke(cfg_group, ["check", str(path), "--memory", "lots"])
    assert bad.exit_code != 0 and "--memory 'lots' is not a size" in str(bad.exception)
