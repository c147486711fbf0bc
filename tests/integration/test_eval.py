"""Evaluation end to end: Debian's darknet trains the micro network; its checkpoints are
evaluated by `farm.eval.checkpoint` tasks on a separate `eval` worker; the two evaluators
agree; tiled detection finds marks in a full screenshot; bad input is refused.

How agreement is proven on this machine (Debian's darknet has no `detector map`): darknet's
own forward pass (`detector valid`) and OpenCV's DNN module give detections for the same
weights and valid list; both are scored by farm.eval.mapcalc and must agree within 0.5 mAP
points. That mapcalc scores as `detector map` does is tested in tests/unit/test_mapcalc.py
(a transcription of AlexeyAB's code, hand cases, the numbers in the shared logs).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm.errors import FindingsError
from farm.eval.cadence import should_evaluate
from farm.eval.evaluate import evaluate_checkpoint
from farm.runs.model import RunState
from farm.store import Store
from tests.conftest import wait_for
from workers.micro import draw_mark, micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


def farm_cli(capsys, *args: str) -> tuple[int, str, str]:
    from workers.cli import main
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def start_eval_worker(farm):
    """The `eval` queue's worker (another machine in a real farm; a CPU is enough)."""
    return farm.worker("eval1", "eval")


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The micro network trained by bare Debian darknet: (data, cfg, {iteration: weights}).

    Debian's darknet now and then dies of SIGSEGV while training (the farm restarts such
    an attempt once); here the training is simply run again, at most twice more."""
    if shutil.which("darknet") is None:
        pytest.fail("darknet is not installed (apt-get install darknet)")
    root = tmp_path_factory.mktemp("trained")
    data = micro_dataset(root / "ds", images=32, seed=3)
    cfg = micro_cfg(root / "micro.cfg", max_batches=300)
    for _ in range(3):
        done = subprocess.run(["darknet", "detector", "train", str(data), str(cfg)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=180)
        if done.returncode == 0:
            break
    assert done.returncode == 0, f"darknet training failed 3 times (last: {done.returncode})"
    backup = root / "ds" / "backup"
    return data, cfg, {100: backup / "micro_100.weights", 300: backup / "micro_final.weights"}


# -- periodic evaluation by tasks on the eval worker ----------------------------------------

def test_checkpoints_are_evaluated_by_tasks_on_a_separate_eval_worker(farm, tmp_path, capsys,
                                                                     darknet_bin):
    from workers.tasks.enqueue import enqueue_eval
    data = micro_dataset(tmp_path / "ds", images=24, seed=1)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=300)
    farm.worker("gpu1")
    start_eval_worker(farm)
    store = Store(farm.settings.effective_redis_url)
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    run_id = out.strip()

    # What the training task will do once wired (the lead calls enqueue_eval from its
    # checkpoint hook): evaluate every finite checkpoint at the cadence, and the final one.
    enqueued: dict[int, str] = {}
    stop = threading.Event()

    def watch():
        last = None
        while not stop.is_set():
            run = store.runs.load(run_id)
            for c in run.checkpoints:
                if c.finite and c.iteration not in enqueued and \
                        should_evaluate(c.iteration, run.max_batches, 100, last=last):
                    enqueued[c.iteration] = enqueue_eval(run_id, c.path, c.iteration)
                    last = c.iteration
            if run.state.finished:
                return
            stop.wait(0.05)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    run = wait_for(lambda: (r := store.runs.load(run_id)).state.finished and r, 120, 0.2,
                   what="the run to finish")
    watcher.join(10)
    stop.set()
    assert run.state is RunState.COMPLETED, run.message
    assert sorted(enqueued) == [100, 200, 300]
    evals = wait_for(lambda: len(e := store.evaluations.all(run_id)) == 3 and e, 60, 0.2,
                     what="three evaluations")

    assert [e.iteration for e in evals] == [100, 200, 300]
    for e in evals:
        assert e.error is None, e
        assert e.evaluator == "opencv-dnn" and 0.0 <= e.map <= 1.0
        assert e.worker.startswith("eval1@testhost") and e.images == 6
        assert None not in (e.precision, e.recall, e.f1, e.tp, e.fp, e.fn, e.avg_iou), e
        assert e.classes[0]["name"] == "close"
    assert evals[-1].map > 0.0, "300 iterations of the micro net find some marks"
    # the run's own best.weights: a copy of the best-mAP checkpoint (later wins ties)
    best = store.evaluations.best(run_id)
    top = max(evals, key=lambda e: (e.map, e.iteration))
    assert best.iteration == top.iteration
    best_file = Path(farm.settings.runs_dir) / run_id / "best.weights"
    assert top.sha256 == best.sha256
    # the record lands first, the copy right after it (a busy machine shows the gap)
    wait_for(lambda: best_file.exists() and sha256(best_file) == best.sha256, 10, 0.1,
             what="best.weights to be the best checkpoint")
    # the pinned copies are gone once evaluated (training kept only its newest one)
    queue = Path(farm.settings.runs_dir) / run_id / "eval" / "queue"
    wait_for(lambda: not list(queue.iterdir()), 10, 0.1,
             what="the pins to go (each right after its record and best.weights)")

    # a truncated checkpoint is evaluated into an error record, not a crash or a best
    broken = tmp_path / "broken.weights"
    broken.write_bytes(best_file.read_bytes()[:1000])
    enqueue_eval(run_id, str(broken), 999)
    bad = wait_for(lambda: next((e for e in store.evaluations.all(run_id)
                                 if e.iteration == 999), None), 30, 0.2,
                   what="the broken checkpoint's evaluation")
    assert "truncated" in bad.error or "does not fit" in bad.error
    assert store.evaluations.best(run_id).iteration == top.iteration

    # the run's chart, for the whole lineage, from the CLI
    code, out, err = farm_cli(capsys, "chart", run_id, "-o", str(tmp_path / "chart.png"))
    assert code == 0, err
    png = cv2.imread(str(tmp_path / "chart.png"))
    assert png is not None and png.shape[:2] == (680, 1200) and "300 iterations" in out


def test_a_resumed_run_sends_the_evaluations_its_dead_worker_never_sent(farm, tmp_path,
                                                                        trained):
    """The worker died between recording a checkpoint and sending its evaluation: the next
    attempt sends it (once), and nothing already sent or evaluated goes again."""
    import time

    import redis
    from farm.runs.model import Checkpoint, Run
    from farm.eval.cadence import catch_up
    from workers.tasks.train import _send_eval as send  # what the training task sends
    data, cfg, weights = trained
    store = Store(farm.settings.effective_redis_url)
    keep = tmp_path / "kept"
    keep.mkdir()
    files = {it: shutil.copyfile(weights[100], keep / f"{it}.weights") for it in (100, 200, 300)}
    run = Run(id="r-catchup", data=str(data), cfg=str(cfg), weights=None, base_dir=str(tmp_path),
              overrides={}, policy={}, host="testhost", created_at=time.time(),
              max_batches=300, eval_every=100, checkpoints=[
                  Checkpoint(it, str(files[it]), str(files[it]), True, 1, time.time())
                  for it in (100, 200, 300)])
    store.runs.save(run)
    store.evaluations.mark_sent(run.id, 300)         # sent before the worker died
    Path(files[200]).unlink()                       # replaced since: nothing to evaluate
    broker = redis.Redis.from_url(farm.settings.effective_redis_url)
    before = broker.llen("eval")
    catch_up(store, run, send)
    assert broker.llen("eval") == before + 1        # iteration 100 only
    body = json.loads(broker.lrange("eval", 0, 0)[0])
    assert body["headers"]["argsrepr"].startswith("['r-catchup', ")
    assert "100" in body["headers"]["shadow"]
    assert store.evaluations.sent(run.id) == {100, 300}
    catch_up(store, run, send)
    assert broker.llen("eval") == before + 1        # and only once


# -- two evaluators -------------------------------------------------------------------------

@pytest.mark.parametrize("points", [0, 101])
def test_darknets_own_detections_and_opencvs_agree_within_half_a_map_point(trained, points):
    """Same weights, same valid list: darknet's forward pass (`detector valid`) and
    OpenCV's, both scored by mapcalc. pjreddie writes boxes cut at the image's edges, so
    the farm-native boxes are cut the same way for the comparison (clip=True).

    The barely trained checkpoint (iteration 100: ~750 detections of nearly equal
    confidence) is the hard case: darknet prints confidences with six decimals, and before
    mapcalc ranked ties one fixed way the two differed there by 7.5 points."""
    data, cfg, weights = trained
    for iteration, path in weights.items():
        dnn = evaluate_checkpoint(path, data=data, cfg=cfg, evaluator="opencv", points=points,
                                  clip=True)
        own = evaluate_checkpoint(path, data=data, cfg=cfg, evaluator="darknet-valid",
                                  points=points)
        assert (dnn.evaluator, own.evaluator) == ("opencv-dnn", "darknet-valid")
        assert abs(dnn.map - own.map) <= 0.005, (iteration, dnn.map, own.map)
        # The two forward passes round differently in float32: now and then one detection
        # sits on a threshold (0.005 to be listed, 0.25 to count as TP/FP) in one and just
        # below it in the other (measured: 2 of 16 trainings, 526 vs 527 detections, the
        # mAP equal). One such detection is allowed; a broken scorer differs by far more.
        counts = [abs(getattr(dnn, k) - getattr(own, k))
                  for k in ("tp", "fp", "fn", "detections")]
        assert sum(counts) <= 2 and max(counts) <= 1, (iteration, dnn, own)
        assert dnn.images == own.images == 8
        assert dnn.avg_iou == pytest.approx(own.avg_iou, abs=2e-3)
        # AlexeyAB's map does not cut boxes: the farm-native default keeps them whole
        whole = evaluate_checkpoint(path, data=data, cfg=cfg, points=points)
        assert whole.detections == dnn.detections and not whole.clipped
    assert dnn.map > 0.1  # the final weights detect: the agreement is not 0 == 0


def test_farm_eval_prints_the_map_block(trained, capsys):
    data, cfg, weights = trained
    code, out, err = farm_cli(capsys, "eval", str(weights[300]), "--data", str(data),
                              "--cfg", str(cfg), "--points", "11")
    assert code == 0, err
    assert "used 11 Recall-points" in out and "mean average precision (mAP@0.50) = " in out
    assert "class_id = 0, name = close, ap = " in out and "evaluator: opencv-dnn" in out
    code, out, _ = farm_cli(capsys, "eval", str(weights[300]), "--data", str(data), "--cfg",
                            str(cfg), "--json")
    assert json.loads(out)["points"] == 0


# -- tiled detection on a full screenshot ----------------------------------------------------

MARKS = [(20, 30, 16), (100, 150, 14), (40, 250, 18), (56, 56, 16)]  # x, y, size; the last
# one straddles the edge between tiles


def screenshot(path: Path, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    img = (rng.random((320, 192, 3)) * 60 + 70).astype(np.uint8)
    for x, y, s in MARKS:
        draw_mark(img, x, y, s, rng)
    cv2.imwrite(str(path), img)
    path.with_suffix(".txt").write_text("".join(
        f"0 {(x + s / 2) / 192:.6f} {(y + s / 2) / 320:.6f} {(s + 1) / 192:.6f} "
        f"{(s + 1) / 320:.6f}\n" for x, y, s in MARKS))
    return path


def box_iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tiled_detection_finds_the_marks_in_a_full_screenshot(trained, tmp_path, capsys):
    """Tiles at the network's size (64 px) over a 192x320 screenshot, one mark straddling
    a tile edge. (That tiles never double a mark is tested without a network in
    tests/unit/test_detect.py; a micro net may double a mark by itself.)"""
    data, cfg, weights = trained
    (tmp_path / "shots").mkdir()
    shot = screenshot(tmp_path / "shots" / "screen.png")
    code, out, err = farm_cli(capsys, "detect", str(weights[300]), str(shot), "--cfg", str(cfg),
                              "--names", str(data.parent / "obj.names"), "--tile",
                              "--thresh", "0.1", "-o", str(tmp_path / "out"))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    [image] = report["images"]
    assert report["tiled"] and (image["width"], image["height"]) == (192, 320)
    # the JSON lists what reached --thresh; 0.1, as a 300-iteration micro net trained from
    # scratch (darknet shuffles at random) is sometimes unsure of one mark
    for x, y, s in MARKS:
        hits = [d for d in image["detections"]
                if box_iou((d["x0"], d["y0"], d["x1"], d["y1"]), (x, y, x + s, y + s)) > 0.3]
        assert hits, ((x, y, s), image["detections"])
        assert all(h["name"] == "close" for h in hits)
    annotated = cv2.imread(image["annotated"])
    assert annotated.shape == (320, 192, 3)
    assert not np.array_equal(annotated, cv2.imread(str(shot)))
    # mAP on labelled full screenshots, detected tile by tile
    (tmp_path / "shots" / "valid.txt").write_text(f"{shot}\n")
    (tmp_path / "shots" / "obj.data").write_text(
        f"classes = 1\nvalid = {tmp_path / 'shots' / 'valid.txt'}\n"
        f"names = {data.parent / 'obj.names'}\n")
    result = evaluate_checkpoint(weights[300], data=tmp_path / "shots" / "obj.data", cfg=cfg,
                                 tiled=True)
    assert result.tiled and result.evaluator == "opencv-dnn" and result.truths == 4
    assert result.map > 0.1
    # on images of the network's size, tiled evaluation is plain evaluation
    plain = evaluate_checkpoint(weights[300], data=data, cfg=cfg)
    tiled = evaluate_checkpoint(weights[300], data=data, cfg=cfg, tiled=True)
    assert (tiled.map, tiled.tp, tiled.fp) == (plain.map, plain.tp, plain.fp)


# -- bad input --------------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_refused(trained, tmp_path, capsys):
    data, cfg, weights = trained
    cut = tmp_path / "cut.weights"
    cut.write_bytes(weights[300].read_bytes()[:-10])
    with pytest.raises(FindingsError) as e:
        evaluate_checkpoint(cut, data=data, cfg=cfg)
    assert "cut.weights" in str(e.value) and "truncated" in str(e.value)
    code, _, err = farm_cli(capsys, "eval", str(cut), "--data", str(data), "--cfg", str(cfg))
    assert code == 2 and "cut.weights" in err and "copy the file again" in err


def test_a_checkpoint_from_another_cfg_is_refused(trained, tmp_path, capsys):
    data, cfg, _ = trained
    other = micro_cfg(tmp_path / "two.cfg", max_batches=1, classes=2)  # the seed's mix-up
    subprocess.run(["darknet", "detector", "train", str(data), str(other)], cwd=tmp_path,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    foreign = data.parent / "backup" / "two_final.weights"
    with pytest.raises(FindingsError) as e:
        evaluate_checkpoint(foreign, data=data, cfg=cfg)
    assert "written for another cfg" in str(e.value) or "does not fit" in str(e.value)
    code, _, err = farm_cli(capsys, "detect", str(foreign), str(data.parent / "frames" /
                                                                "img0000.jpg"),
                            "--cfg", str(cfg), "-o", str(tmp_path / "out"))
    assert code == 2 and "two_final.weights" in err and "use the cfg these weights" in err


def test_a_valid_list_that_fails_lint_is_refused_with_every_finding(trained, tmp_path, capsys):
    data, cfg, weights = trained
    valid = [line for line in (data.parent / "valid.txt").read_text().splitlines() if line]
    bad = tmp_path / "valid.txt"
    bad.write_text(f"{valid[0]}\n\n{valid[1][:-4]}.txt\n" + "\n".join(valid[2:]) + "\n")
    obj = tmp_path / "obj.data"
    obj.write_text(f"classes = 1\nvalid = {bad}\nnames = {data.parent / 'obj.names'}\n")
    with pytest.raises(FindingsError) as e:
        evaluate_checkpoint(weights[300], data=obj, cfg=cfg)
    where = {(f.path, f.line) for f in e.value.findings if f.severity == "error"}
    assert {(str(bad), 2), (str(bad), 3)} <= where
    code, _, err = farm_cli(capsys, "eval", str(weights[300]), "--data", str(obj), "--cfg",
                            str(cfg))
    assert code == 2 and f"{bad}:2" in err and f"{bad}:3" in err and "blank line" in err


def test_partial_conv_weights_are_refused_by_farm_detect(trained, tmp_path, capsys):
    data, cfg, weights = trained
    partial = tmp_path / "micro.conv.3"
    shutil.copyfile(weights[300], partial)
    code, out, err = farm_cli(capsys, "detect", str(partial), str(data.parent / "frames" /
                                                                  "img0000.jpg"),
                              "--cfg", str(cfg), "-o", str(tmp_path / "out"))
    assert code == 2 and "micro.conv.3" in err
    assert "holds only the first N pretrained layers" in err and "detects nothing" in err
    assert not (tmp_path / "out" / "detections.json").exists()


# -- the right dialect, absolute paths (issue 10, item 5) --------------------------------------

#: Parameters of a one-class yolov4-tiny as AlexeyAB's darknet builds it (and writes its
#: weights): the figure of the checkpoint a Debian host refused before ("its 5880324
#: parameters end inside layer 35 … the cfg needs 6073860", pjreddie's count).
Y4T_1CLASS_ALEXEYAB = 5880324


def test_an_alexeyab_yolov4_tiny_checkpoint_is_evaluated_by_opencv_on_this_debian_host(
        tmp_path, capsys, monkeypatch):
    """The weights' header (0.2.5) and the cfg's [route] groups say AlexeyAB: they are
    judged in its layout, which OpenCV builds too, whatever darknet is installed here."""
    upstream = Path(__file__).resolve().parents[2].parent / "shared" / "darknet" / "cfg" / \
        "yolov4-tiny-custom.cfg"
    if not upstream.exists():
        pytest.skip(f"{upstream} is absent (../shared is not checked out beside the project)")
    from farm.darknet.cfg import Cfg, make_cfg
    micro_dataset(tmp_path / "ds", images=8)
    make_cfg(Cfg.load(upstream), classes=1, width=64, height=64, batch=2, subdivisions=1,
             max_batches=100).save(tmp_path / "y4t.cfg")
    weights = tmp_path / "y4t_best.weights"
    weights.write_bytes(struct.pack("<iiiQ", 0, 2, 5, 64000) + bytes(4 * Y4T_1CLASS_ALEXEYAB))
    monkeypatch.chdir(tmp_path)  # and relative paths, as a person types them
    code, out, err = farm_cli(capsys, "eval", "y4t_best.weights", "--data", "ds/obj.data",
                              "--cfg", "y4t.cfg", "--evaluator", "opencv", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["evaluator"] == "opencv-dnn" and result["images"] == 2
    assert result["weights"] == str(weights) and result["cfg"] == str(tmp_path / "y4t.cfg")
    # Debian's darknet would build another network from this cfg: refused, saying why
    code, _, err = farm_cli(capsys, "eval", "y4t_best.weights", "--data", "ds/obj.data",
                            "--cfg", "y4t.cfg", "--evaluator", "darknet-valid")
    assert code == 2 and "pjreddie's (Debian's) darknet builds another one" in err
    assert "--evaluator opencv" in err


def test_farm_eval_with_relative_paths_runs_darknet_in_its_own_folder(trained, capsys,
                                                                     monkeypatch):
    """darknet runs in a scratch folder; the paths typed relative to the shell's folder
    reach it absolute (before, darknet said "Couldn't open file: …/micro.cfg")."""
    data, cfg, weights = trained
    root = cfg.parent
    monkeypatch.chdir(root)
    rel = [os.path.relpath(p, root) for p in (weights[300], data, cfg)]
    assert not any(os.path.isabs(p) for p in rel)
    code, out, err = farm_cli(capsys, "eval", rel[0], "--data", rel[1], "--cfg", rel[2],
                              "--evaluator", "darknet-valid", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["evaluator"] == "darknet-valid" and result["images"] == 8
    assert result["map"] > 0.1 and result["cfg"] == str(cfg)
