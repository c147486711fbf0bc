"""Screens end to end with Debian's darknet at micro scale: the user's labelled
screenshots (drawn here: 192x320 screens with 12-20 px close marks, so the micro
network's 64x64 tiles hold whole marks) are split, synthesized from, trained on, and
every checkpoint is judged on the held-out whole screenshots.

Real parts: redis-server, Celery workers (gpu: the CPU stand-in for a GPU; eval; cpu with
beat for the sweep), darknet. What is checked against what:
- a run with --eval-screens ranks its checkpoints (best.weights) on the screens mAP;
- the farm's screens mAP of the real network equals an independent reference: every tile
  through the network one at a time, merged by plain loops (tests/unit/test_nms.py's
  transcriptions), scored by mapcalc;
- `farm acceptance` runs end to end: a sweep ranked by held-out screens mAP, the report
  per GPU-hour, the bundle of the best trial.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm import acceptance
from farm.datasets.screens import open_screens
from farm.datasets.tile import tile_positions
from farm.eval import mapcalc
from farm.eval.detect import DnnDetector
from farm.eval.screens import default_overlap, evaluate_screens
from farm.runs.model import RunState
from farm.store import Store
from tests.conftest import wait_for
from tests.screens_kit import labelimg_folder
from tests.unit.test_detect import naive_nms
from tests.unit.test_nms import naive_drop
from workers.micro import micro_cfg

pytestmark = pytest.mark.integration


def farm_cli(capsys, *args: str) -> tuple[int, str, str]:
    from workers.cli import main
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def screens_case(tmp_path_factory):
    """24 labelled screenshots, split and synthesized from as `farm acceptance` does."""
    root = tmp_path_factory.mktemp("screens")
    labelimg_folder(root / "labelimg", 24, size=(192, 320), mark_px=(12, 20), seed=21)
    cfg = micro_cfg(root / "micro.cfg", max_batches=400)
    plan = acceptance.prepare(root / "labelimg", names=root / "labelimg" / "obj.names",
                              out=root / "accept", cfg=cfg, datasets_root=root / "datasets",
                              images=320, learning_rates=(0.001,), iterations=400,
                              eval_every=100)
    return root, cfg, plan


def evaluated(store: Store, run_id: str) -> list[dict]:
    """The run's evaluations once every one it sent has landed."""
    def done():
        sent = store.evaluations.sent(run_id)
        evals = store.evaluations.all(run_id)
        return sent and sent <= {int(e.iteration) for e in evals} and evals
    return wait_for(done, 120, 0.2, what=f"the evaluations of {run_id}")


def test_a_run_with_eval_screens_ranks_its_checkpoints_on_the_screens(
        farm, screens_case, capsys, darknet_bin):
    root, cfg, plan = screens_case
    farm.worker("gpu1")
    farm.worker("eval1", "eval")
    code, out, err = farm_cli(capsys, "train", plan.dataset, str(cfg), "--eval-every", "100",
                              "--eval-screens", plan.held_screens, "--wait")
    assert code == 0, err
    run_id = out.strip().splitlines()[0]
    store = Store(farm.settings.effective_redis_url)
    run = store.runs.load(run_id)
    assert run.state is RunState.COMPLETED and run.rank_by == "screens_map50"
    assert run.eval_screens == str(Path(plan.held_screens) / "obj.data")
    evals = evaluated(store, run_id)
    assert [e.iteration for e in evals] == [100, 200, 300, 400]
    for e in evals:
        s = e.screens
        assert s.error is None, s
        assert 0 <= s.map <= 1 and s.images == plan.held_count and s.truths > 0
        assert s.tile == (64, 64) and s.overlap == 32
    top = max(evals, key=lambda e: (e.screens.map, e.iteration))
    best = store.evaluations.best(run_id)
    assert best.iteration == top.iteration and best.sha256 == top.sha256
    best_file = Path(farm.settings.runs_dir) / run_id / "best.weights"
    wait_for(lambda: best_file.exists() and sha256(best_file) == top.sha256, 10, 0.1,
             what="best.weights to be the best checkpoint on the screens")
    assert max(e.screens.map for e in evals) > 0, "the network finds some marks"
    code, out, err = farm_cli(capsys, "status", run_id)
    assert code == 0, err
    assert "ranked by screens mAP" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("best:"))
    assert f"iteration {top.iteration}, mAP@0.50 {top.map * 100:.2f} %, screens " \
           f"mAP@0.50 {top.screens.map * 100:.2f} %" in line
    # keep the final weights for the reference test below
    shutil.copyfile(run.checkpoints[-1].path, root / "final.weights")


def reference_screens_map(cfg: Path, weights: Path, screens) -> dict:
    """The screens mAP computed without the farm's tiled path: each tile alone through the
    network (DnnDetector.raw), darknet's NMS loop per tile, the cut-box rule and the NMS
    across tiles as plain loops, scored by mapcalc."""
    detector = DnnDetector(cfg, weights)
    overlap = default_overlap(screens, (64, 64))
    dets, truths = [], []
    for image, boxes in screens.items():
        pixels = cv2.imread(image)
        h, w = pixels.shape[:2]
        all_boxes, all_scores, cut = [], [], []
        for y in tile_positions(h, 64, overlap):
            for x in tile_positions(w, 64, overlap):
                b, s = detector.raw(pixels[y:y + 64, x:x + 64])
                s = naive_nms(b, s, 0.45)
                keep = s[:, 0] > 0
                b, s = b[keep], s[keep]
                b[:, 0] += x
                b[:, 1] += y
                x0, x1 = b[:, 0] - b[:, 2] / 2, b[:, 0] + b[:, 2] / 2
                y0, y1 = b[:, 1] - b[:, 3] / 2, b[:, 1] + b[:, 3] / 2
                real = (np.minimum(x1, w) - np.maximum(x0, 0) >= 1) & \
                    (np.minimum(y1, h) - np.maximum(y0, 0) >= 1)
                b, s, x0, y0, x1, y1 = b[real], s[real], x0[real], y0[real], x1[real], y1[real]
                all_boxes.append(b)
                all_scores.append(s)
                cut.append(((x > 0) & (x0 <= x + 2)) | ((y > 0) & (y0 <= y + 2))
                           | ((x + 64 < w) & (x1 >= x + 62)) | ((y + 64 < h) & (y1 >= y + 62)))
        b, s = np.concatenate(all_boxes), np.concatenate(all_scores)
        s = naive_nms(b, naive_drop(b, s, np.concatenate(cut)), 0.45)
        dets += [mapcalc.Detection(image, 0, float(v), tuple(bb)) for bb, v in zip(b, s[:, 0])
                 if v > 0]
        truths += [mapcalc.Truth(image, c, ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))
                   for c, x0, y0, x1, y1 in boxes]
    score = mapcalc.score(dets, truths, names=1)
    return {"map": score.map, "tp": score.tp, "fp": score.fp, "detections": score.detections}


def test_the_screens_map_of_the_real_network_equals_an_independent_reference(screens_case):
    root, cfg, plan = screens_case
    weights = root / "final.weights"
    if not weights.exists():
        pytest.fail("needs the run of the test above (run the module, not this test alone)")
    screens = open_screens(plan.held_screens)
    farm_side = evaluate_screens(weights, screens=screens, cfg=cfg)
    ref = reference_screens_map(cfg, weights, screens)
    assert ref["detections"] > 0
    assert (farm_side.map, farm_side.tp, farm_side.fp, farm_side.detections) == \
        pytest.approx((ref["map"], ref["tp"], ref["fp"], ref["detections"]), abs=1e-9)


def test_acceptance_runs_end_to_end_and_ranks_by_held_out_screens_map(
        farm, screens_case, tmp_path, capsys, darknet_bin):
    """`farm acceptance` at micro scale: two learning rates, ranked by held-out screens
    mAP; the report per GPU-hour; the bundle of the best trial."""
    root, cfg, _ = screens_case
    farm.worker("gpu1")
    farm.worker("eval1", "eval")
    farm.worker("cpu1", "cpu")
    farm.beat()
    out_dir = tmp_path / "accept"
    code, out, err = farm_cli(capsys, "acceptance", str(root / "labelimg"), "--names",
                              str(root / "labelimg" / "obj.names"), "--cfg", str(cfg),
                              "-o", str(out_dir), "-n", "320", "--learning-rate", "0.001",
                              "--learning-rate", "0.01", "--iterations", "300",
                              "--eval-every", "100", "--timeout", "600")
    assert code == 0, err + out
    report = json.loads((out_dir / "acceptance.json").read_text())
    plan = report["plan"]
    assert plan["train_count"] + plan["held_count"] == 24 and plan["held_count"] >= 1
    held = {Path(p).name for p in open(Path(plan["held_screens"]) / "valid.txt").read().split()}
    train = {Path(p).name for p in open(Path(plan["train_screens"]) / "valid.txt").read().split()}
    assert held and train and not held & train  # judged on screens it never saw
    store = Store(farm.settings.effective_redis_url)
    trials = report["trials"]
    assert len(trials) == 2 and all(t["state"] == "completed" for t in trials)
    for t in trials:  # each trial's screens mAP is its evaluations' best
        evals = store.evaluations.all(t["run_id"])
        assert t["screens_map50"] == max(e.screens.map for e in evals)
        assert t["tile_map50"] == max(e.map for e in evals)
    order = sorted(trials, key=lambda t: (-t["screens_map50"], t["trial"]))
    best = report["best"]
    assert best["trial"] == order[0]["trial"]
    assert best["held_out_screens_map50"] == order[0]["screens_map50"]
    hours = sum(t["gpu_hours"] for t in trials)
    assert report["gpu_hours"] == pytest.approx(hours) and hours > 0
    assert report["held_out_screens_map50_per_gpu_hour"] == \
        pytest.approx(best["held_out_screens_map50"] / hours)
    assert "per GPU-hour" in out and "held-out screens mAP" in out
    bundle = json.loads((out_dir / "best" / "result.json").read_text())
    assert bundle["run_id"] == best["run_id"] and bundle["objective"]["name"] == "screens_map50"
    assert bundle["screens_map50"] == best["held_out_screens_map50"]
    best_eval = store.evaluations.best(best["run_id"])
    assert best_eval.screens.map == best["held_out_screens_map50"]
    assert sha256(out_dir / "best" / "best.weights") == best_eval.sha256
    assert best["weights_iteration"] == best_eval.iteration == bundle["weights_iteration"]
    assert f"bundle weights of iteration {best_eval.iteration}" in out
    code, out, err = farm_cli(capsys, "sweep", "show", report["sweep"])
    assert code == 0 and "TILE MAP" in out and "SCREENS" in out
    # the board's overlay and the morning report draw the mAP the sweep ranks on
    from dashboard.sweeps import sweep_payload
    page = sweep_payload(store, report["sweep"])
    assert page["overlay"]["map_label"] == "screens mAP@0.50 (whole screenshots)"
    assert "screens mAP@0.50 (whole screenshots)" in page["svg"]
    assert sorted(c["map_points"] for c in page["overlay"]["curves"]) == sorted(
        len([e for e in store.evaluations.all(t["run_id"]) if e.screens]) for t in trials)
    code, out, err = farm_cli(capsys, "sweep", "report", report["sweep"], "-o",
                              str(tmp_path / "report.html"))
    assert code == 0, err
    assert "screens mAP@0.50 (whole screenshots)" in (tmp_path / "report.html").read_text()
    assert os.path.isfile(out_dir / "best" / "best.cfg")
