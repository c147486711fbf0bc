"""farm.acceptance without a farm: the split, the spec it writes, the report's arithmetic.
(End to end with darknet and workers: tests/integration/test_screens.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from farm.acceptance import Plan, format_report, prepare, report, split
from farm.errors import BadInput
from farm.sweeps.spec import load_spec
from tests.screens_kit import labelimg_folder
from workers.micro import micro_cfg


def test_the_split_is_stable_disjoint_and_never_leaves_a_side_empty(tmp_path):
    labelimg_folder(tmp_path / "li", 12, seed=4)
    a = split(tmp_path / "li", ["close"], tmp_path / "a", 0.25, seed=0)
    b = split(tmp_path / "li", ["close"], tmp_path / "b", 0.25, seed=0)
    names = [sorted(p.name for p in (d / "images").iterdir()) for d in a[:2]]
    assert names == [sorted(p.name for p in (d / "images").iterdir()) for d in b[:2]]
    assert not set(names[0]) & set(names[1]) and len(names[0]) + len(names[1]) == 12
    assert a[2] == (len(names[0]), len(names[1])) and all(a[2])
    for d in a[:2]:  # every image keeps its label
        assert sorted(p.stem for p in (d / "labels").iterdir()) == \
            sorted(Path(n).stem for n in (p.name for p in (d / "images").iterdir()))
    two = tmp_path / "two"
    labelimg_folder(two, 2, seed=5)
    for share in (0.01, 0.99):
        assert split(two, ["close"], tmp_path / f"s{share}", share, seed=0)[2] == (1, 1)
    one = tmp_path / "one"
    labelimg_folder(one, 1, seed=6)
    with pytest.raises(BadInput, match="at least 2"):
        split(one, ["close"], tmp_path / "o", 0.25, seed=0)


def test_prepare_writes_a_screens_sweep_that_loads(tmp_path):
    labelimg_folder(tmp_path / "li", 6, seed=7)
    cfg = micro_cfg(tmp_path / "micro.cfg")
    plan = prepare(tmp_path / "li", names=tmp_path / "li" / "obj.names", out=tmp_path / "out",
                   cfg=cfg, datasets_root=tmp_path / "ds", images=24,
                   learning_rates=(0.001, 0.01), iterations=50, eval_every=25,
                   sets={"burn_in": "0"})
    spec = load_spec(plan.spec)
    assert spec.objective == "screens_map50" and spec.trials == 2
    assert spec.eval_screens == str(Path(plan.held_screens) / "obj.data")
    assert spec.data == plan.dataset and spec.fixed == {"burn_in": "0"}
    assert spec.budget.iterations == 50 and spec.eval_every == 25
    assert (Path(plan.out) / "synth" / "contact_sheet.png").exists()
    assert len(list((Path(plan.out) / "synth" / "backgrounds").iterdir())) == plan.train_count


def test_the_report_divides_the_best_held_out_map_by_the_gpu_hours():
    plan = Plan("/o", "/t", "/h", "/d", "/s", 9, 3, {"marks": 20, "long_side_px": {
        "min": 12, "p10": 13, "median": 16, "p90": 19, "max": 20}, "w_over_h": None})
    rows = [{"rank": 1, "trial": 1, "run_id": "r1", "params": {"learning_rate": "0.01"},
             "state": "completed", "screens_map": 0.6, "tile_map": 0.7,
             "best_iteration": 300, "wall_time": 1800.0, "iterations": 300, "restarts": 0},
            {"rank": 2, "trial": 0, "run_id": "r0", "params": {"learning_rate": "0.001"},
             "state": "completed", "screens_map": 0.4, "tile_map": 0.9,
             "best_iteration": 300, "wall_time": 5400.0, "iterations": 300, "restarts": 1,
             "settings": {"text": "learning_rate 0.001 -> 0.0005, burn_in 0 -> 100 after "
                                  "1 restart"}}]
    r = report(plan, {"id": "s1", "state": "done"}, rows)
    assert r["gpu_hours"] == 2.0 and r["held_out_screens_map50_per_gpu_hour"] == 0.3
    assert r["best"]["trial"] == 1 and r["best"]["tile_map50"] == 0.7
    text = "\n".join(format_report(r))
    assert "30.00 mAP points per GPU-hour" in text and "held-out screens mAP 60.00 %" in text
    # a trial's row is what was asked; a restart's lower rate is said beside it
    [t0] = [ln for ln in text.splitlines() if ln.startswith("  trial 0 ")]
    assert t0.endswith("[trained: learning_rate 0.001 -> 0.0005, burn_in 0 -> 100 after "
                       "1 restart]"), t0
    assert "[trained" not in next(ln for ln in text.splitlines() if ln.startswith("  trial 1"))
    assert r["trials"][1]["trained_with"].startswith("learning_rate 0.001 -> 0.0005")
    assert r["best"]["trained_with"] == "as requested"
    none = report(plan, {"id": "s1", "state": "done"}, [{**rows[0], "rank": None,
                                                         "screens_map": None}])
    assert none["best"] is None and none["held_out_screens_map50_per_gpu_hour"] is None
