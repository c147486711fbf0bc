"""The farm-native mAP (farm.eval.mapcalc) against hand-computed cases, against a
transcription of AlexeyAB's `validate_detector_map()` on random data, and against the
numbers in ../shared/darknet/logs/*map* that can be recomputed from the logs themselves.

What the logs cannot give: the detections behind their AP values (darknet does not print
them), so a printed AP cannot be recomputed; it is only checked against the bound that the
area-under-curve definition implies (AP >= precision x recall at the threshold).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import replace

import pytest

from farm.darknet.events import MapResult
from farm.darknet.logparse import parse_file
from farm.errors import BadInput
from farm.eval.cadence import should_evaluate
from farm.eval.evaluate import format_result, map_block_evaluation, score_evaluation
from farm.eval.mapcalc import (Detection, Truth, average_precision, iou, read_truths, score,
                               threshold_stats)
from tests.conftest import shared_path


def det(image, conf, box, c=0):
    return Detection(image, c, conf, box)


def truth(image, box, c=0):
    return Truth(image, c, box)


# -- hand-computed -------------------------------------------------------------------------

def test_iou_of_centre_boxes():
    assert iou((1, 1, 2, 2), (1, 1, 2, 2)) == 1.0
    assert iou((0, 0, 2, 2), (1, 1, 2, 2)) == pytest.approx(1 / 7)
    assert iou((0, 0, 1, 1), (5, 5, 1, 1)) == 0.0
    assert iou((0, 0, 1, 1), (1, 0, 1, 1)) == 0.0  # touching edges do not overlap


# Four truths (two per image); ranked detections TP .9, FP .8, TP .7, TP .6:
# precision 1, 1/2, 2/3, 3/4 at recall 1/4, 1/4, 2/4, 3/4.
HAND_TRUTHS = [truth("a", (10, 10, 4, 4)), truth("a", (30, 10, 4, 4)),
               truth("b", (10, 10, 4, 4)), truth("b", (30, 30, 4, 4))]
HAND_DETS = [det("a", 0.9, (10, 10, 4, 4)), det("b", 0.8, (50, 50, 4, 4)),
             det("a", 0.7, (30, 10, 4, 4)), det("b", 0.6, (10, 10, 4, 4))]


def test_area_under_curve_by_hand():
    # envelope: 1 on (0, .25], .75 on (.25, .75] -> .25 * 1 + .5 * .75
    assert score(HAND_DETS, HAND_TRUTHS, names=["close"]).map == pytest.approx(0.625)


def test_eleven_and_hundred_one_recall_points_by_hand():
    # 11 points: recall 0, .1, .2 -> 1; .3 … .7 -> .75; .8, .9, 1 -> 0
    assert score(HAND_DETS, HAND_TRUTHS, names=1, points=11).map == pytest.approx(6.75 / 11)
    # 101 points: recall 0 … .25 (26 points) -> 1; .26 … .75 (50) -> .75; the rest 0
    assert score(HAND_DETS, HAND_TRUTHS, names=1, points=101).map == pytest.approx(63.5 / 101)


def test_average_precision_from_a_curve_directly():
    assert average_precision([1.0, 0.5, 2 / 3, 0.75], [0.25, 0.25, 0.5, 0.75]) == 0.625
    assert average_precision([], []) == 0.0
    with pytest.raises(BadInput, match="points=1"):
        average_precision([1.0], [1.0], points=1)


def test_threshold_counts_precision_recall_f1_and_average_iou():
    dets = HAND_DETS + [det("a", 0.2, (30, 30, 4, 4))]  # below 0.25: ranked, not counted
    s = score(dets, HAND_TRUTHS, names=["close"])
    assert (s.tp, s.fp, s.fn) == (3, 1, 1)
    assert s.precision == 0.75 and s.recall == 0.75 and s.f1 == pytest.approx(0.75)
    assert s.avg_iou == pytest.approx(3 / 4)  # three IoUs of 1 over TP + FP, as darknet
    assert s.classes[0].tp == 3 and s.classes[0].fp == 1 and s.detections == 5


def test_a_truth_found_twice_counts_once_and_is_never_reassigned():
    truths = [truth("a", (10, 10, 10, 10)), truth("a", (13, 10, 10, 10))]
    # both detections pick the first truth (their best IoU); the second truth, which the
    # second detection also overlaps above 0.5, is not given to it: darknet's rule
    first, second = det("a", 0.9, (10, 10, 10, 10)), det("a", 0.8, (11.4, 10, 10, 10))
    assert iou(second.box, truths[0].box) > iou(second.box, truths[1].box) > 0.5
    s = score([first, second], truths, names=1)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.map == pytest.approx(0.5)


def test_iou_must_be_strictly_above_the_threshold():
    t = [truth("a", (1, 0.5, 2, 1))]
    d = [det("a", 0.9, (0.5, 0.5, 1, 1))]  # inside, half the area: IoU exactly 0.5
    assert iou(d[0].box, t[0].box) == 0.5
    assert score(d, t, names=1).map == 0.0
    assert score(d, t, names=1, iou_thresh=0.49).map == 1.0


def test_map_is_the_mean_over_every_class_and_a_class_without_truths_counts_zero():
    truths = [truth("a", (10, 10, 4, 4), 0), truth("a", (30, 30, 4, 4), 1)]
    dets = [det("a", 0.9, (10, 10, 4, 4), 0), det("a", 0.9, (30, 30, 4, 4), 1)]
    s = score(dets, truths, names=["close", "open", "ad"])
    assert [c.ap for c in s.classes] == [1.0, 1.0, 0.0]
    assert s.map == pytest.approx(2 / 3)


def test_no_detections_give_zero_where_darknet_reads_out_of_bounds():
    s = score([], HAND_TRUTHS, names=["close"])
    assert s.map == 0.0 and s.precision is None and s.recall == 0.0 and s.f1 is None
    assert (s.tp, s.fp, s.fn, s.avg_iou) == (0, 0, 4, 0.0)


def test_truth_of_an_unknown_class_is_refused():
    with pytest.raises(BadInput, match="class 3 but only 1 classes"):
        score([], [truth("a", (1, 1, 1, 1), 3)], names=1)


def test_labels_are_read_as_darknet_reads_them(tmp_path):
    label = tmp_path / "x.txt"
    label.write_text("0 0.5 0.5 0.25 0.5\n\n1 0.1 0.2 0.1 0.1\nnot a box\n0 0.9 0.9 0.1 0.1\n")
    got = read_truths("x.jpg", str(label), size=(100, 200))
    assert [t.class_id for t in got] == [0, 1]  # fscanf stops at the unreadable line
    assert got[0].box == (50.0, 100.0, 25.0, 100.0)
    assert read_truths("y.jpg", str(tmp_path / "missing.txt")) == []


# -- AlexeyAB's code, transcribed ------------------------------------------------------------

def alexeyab_map(images, classes, iou_thresh=0.5, thresh_calc_avg_iou=0.25, map_points=0):
    """validate_detector_map() (AlexeyAB src/detector.c) from the detections on, statement
    by statement: images = [(dets, truths)], dets = [(box, probs per class)] in darknet's
    order, truths = [(class_id, box)]. Returns (APs, tp, fp, avg_iou)."""
    detections = []  # dicts: b, p, image_index, class_id, truth_flag, unique_truth_index
    unique_truth_count = 0
    truth_classes_count = [0] * classes
    avg_iou, tp_for_thresh, fp_for_thresh = 0.0, 0, 0
    for image_index, (dets, truth) in enumerate(images):
        for t in truth:
            truth_classes_count[t[0]] += 1
        checkpoint_detections_count = len(detections)
        for bbox, prob_of in dets:
            for class_id in range(classes):
                prob = prob_of[class_id]
                if prob > 0:
                    d = {"p": prob, "class_id": class_id, "truth_flag": 0,
                         "unique_truth_index": -1}
                    detections.append(d)
                    truth_index, max_iou = -1, 0
                    for j, (tc, tb) in enumerate(truth):
                        current_iou = iou(bbox, tb)
                        if current_iou > iou_thresh and class_id == tc:
                            if current_iou > max_iou:
                                max_iou = current_iou
                                truth_index = unique_truth_count + j
                    if truth_index > -1:
                        d["truth_flag"], d["unique_truth_index"] = 1, truth_index
                    if prob > thresh_calc_avg_iou:
                        found = any(detections[z]["unique_truth_index"] == truth_index
                                    for z in range(checkpoint_detections_count,
                                                   len(detections) - 1))
                        if truth_index > -1 and not found:
                            avg_iou += max_iou
                            tp_for_thresh += 1
                        else:
                            fp_for_thresh += 1
        unique_truth_count += len(truth)
    if tp_for_thresh + fp_for_thresh > 0:
        avg_iou = avg_iou / (tp_for_thresh + fp_for_thresh)
    detections.sort(key=lambda d: -d["p"])  # qsort(detections_comparator)
    n = len(detections)
    pr = [[{"precision": 0.0, "recall": 0.0, "tp": 0, "fp": 0} for _ in range(n)]
          for _ in range(classes)]
    truth_flags = [0] * unique_truth_count
    for rank in range(n):
        if rank > 0:
            for c in range(classes):
                pr[c][rank]["tp"] = pr[c][rank - 1]["tp"]
                pr[c][rank]["fp"] = pr[c][rank - 1]["fp"]
        d = detections[rank]
        if d["truth_flag"] == 1 and truth_flags[d["unique_truth_index"]] == 0:
            truth_flags[d["unique_truth_index"]] = 1
            pr[d["class_id"]][rank]["tp"] += 1
        else:
            pr[d["class_id"]][rank]["fp"] += 1
        for i in range(classes):
            tp, fp = pr[i][rank]["tp"], pr[i][rank]["fp"]
            fn = truth_classes_count[i] - tp
            pr[i][rank]["precision"] = tp / (tp + fp) if tp + fp > 0 else 0
            pr[i][rank]["recall"] = tp / (tp + fn) if tp + fn > 0 else 0
    aps = []
    for i in range(classes):
        avg_precision = 0.0
        if map_points == 0:
            last_recall = pr[i][n - 1]["recall"]
            last_precision = pr[i][n - 1]["precision"]
            for rank in range(n - 2, -1, -1):
                delta_recall = last_recall - pr[i][rank]["recall"]
                last_recall = pr[i][rank]["recall"]
                if pr[i][rank]["precision"] > last_precision:
                    last_precision = pr[i][rank]["precision"]
                avg_precision += delta_recall * last_precision
            avg_precision += (last_recall - 0) * last_precision
        else:
            for point in range(map_points):
                cur_recall = point * 1.0 / (map_points - 1)
                cur_precision = 0
                for rank in range(n):
                    if pr[i][rank]["recall"] >= cur_recall and \
                            pr[i][rank]["precision"] > cur_precision:
                        cur_precision = pr[i][rank]["precision"]
                avg_precision += cur_precision
            avg_precision = avg_precision / map_points
        aps.append(avg_precision)
    return aps, tp_for_thresh, fp_for_thresh, avg_iou


def random_dataset(rng: random.Random, classes: int):
    """Images with truths, and detections near them (jittered), duplicates and strays."""
    images, dets, truths = [], [], []
    for k in range(rng.randint(3, 12)):
        name = f"img{k}"
        image_truths = [(rng.randrange(classes), (rng.uniform(20, 80), rng.uniform(20, 80),
                                                  rng.uniform(5, 20), rng.uniform(5, 20)))
                        for _ in range(rng.randint(0, 5))]
        found = []
        for c, (x, y, w, h) in image_truths:
            for _ in range(rng.choice([0, 1, 1, 2])):
                box = (x + rng.gauss(0, 2), y + rng.gauss(0, 2), w * rng.uniform(0.7, 1.3),
                       h * rng.uniform(0.7, 1.3))
                found.append((box, c if rng.random() > 0.15 else rng.randrange(classes)))
        for _ in range(rng.randint(0, 4)):
            found.append(((rng.uniform(0, 100), rng.uniform(0, 100), rng.uniform(3, 20),
                           rng.uniform(3, 20)), rng.randrange(classes)))
        scored = [(box, c, rng.uniform(0.006, 1.0)) for box, c in found]
        scored.sort(key=lambda s: -s[2])  # darknet's NMS order (by confidence)
        images.append(([(box, [p if j == c else 0.0 for j in range(classes)])
                        for box, c, p in scored], image_truths))
        dets += [Detection(name, c, p, box) for box, c, p in scored]
        truths += [Truth(name, c, box) for c, box in image_truths]
    return images, dets, truths


@pytest.mark.parametrize("points", [0, 11, 101])
def test_mapcalc_equals_alexeyabs_code_on_random_detections(points):
    rng = random.Random(points)
    checked = 0
    for _ in range(150):
        classes = rng.randint(1, 3)
        images, dets, truths = random_dataset(rng, classes)
        if not dets:
            continue
        aps, tp, fp, avg = alexeyab_map(images, classes, map_points=points)
        s = score(dets, truths, names=classes, points=points)
        assert [c.ap for c in s.classes] == pytest.approx(aps, abs=1e-12)
        assert (s.tp, s.fp) == (tp, fp) and s.avg_iou == pytest.approx(avg, abs=1e-12)
        checked += 1
    assert checked > 100


# -- the real AlexeyAB logs --------------------------------------------------------------------

def blocks_of(name: str) -> list[MapResult]:
    return [e for e in parse_file(shared_path("darknet", "logs", name))
            if isinstance(e, MapResult)]


def test_the_map_logs_are_read_exactly():
    [h100] = blocks_of("alexeyab-gpu-h100-detector-map.log")
    assert (h100.map, h100.iou_thresh, h100.conf_thresh) == (0.916611, 0.5, 0.25)
    assert [(c.class_id, c.name, c.ap, c.tp, c.fp) for c in h100.classes] == \
        [(0, "close", 0.9166, 579, 223)]
    assert (h100.tp, h100.fp, h100.fn, h100.avg_iou) == (579, 223, 40, 0.5492)
    assert (h100.precision, h100.recall, h100.f1) == (0.72, 0.94, 0.81)
    during = blocks_of("alexeyab-gpu-h100-train-map.log")
    assert [(b.iteration, b.map) for b in during] == [(1000, 0.817287), (1187, 0.916611)]
    assert (during[0].tp, during[0].fp, during[0].fn) == (528, 156, 91)


def test_nan_in_a_map_log_reads_as_no_detections():
    [nan] = blocks_of("alexeyab-cpu-map.log")
    assert nan.map is None and nan.classes[0].ap is None
    assert (nan.tp, nan.fp, nan.fn, nan.precision, nan.recall, nan.f1) == \
        (0, 0, 16, None, 0.0, None)
    result = map_block_evaluation(nan)
    assert result.map is None and "no detections" in result.note
    assert result.score_map == 0.0  # ranks like a checkpoint that found nothing
    assert "mAP@0.50) = -nan, or -nan %" in format_result(replace(result, images=4))
    # the same situation (detections_count = 0) printed as 0.00 % in another log: darknet
    # reads pr[-1] there, out of bounds; the farm-native AP is 0 in both cases
    [zero] = blocks_of("alexeyab-cpu-map-badlist.log")
    assert zero.map == 0.0 and (zero.tp, zero.fp, zero.fn) == (0, 0, 9)
    text = shared_path("darknet", "logs", "alexeyab-cpu-map-badlist.log").read_text()
    assert "detections_count = 0," in text
    assert score([], [truth("a", (1, 1, 1, 1))] * 9, names=["close"]).map == 0.0


@pytest.mark.parametrize("log", ["alexeyab-gpu-h100-detector-map.log",
                                 "alexeyab-gpu-h100-train-map.log", "alexeyab-cpu-map.log",
                                 "alexeyab-cpu-map-badlist.log"])
def test_precision_recall_f1_recomputed_from_the_logged_counts(log):
    text = shared_path("darknet", "logs", log).read_text(errors="replace")
    truths = [int(m) for m in re.findall(r"unique_truth_count = (\d+)", text)]
    for block, unique in zip(blocks_of(log), truths, strict=True):
        p, r, f1 = threshold_stats(block.tp, block.fp, block.fn)
        for mine, printed in ((p, block.precision), (r, block.recall), (f1, block.f1)):
            assert (mine is None) == (printed is None)
            if mine is not None:
                assert f"{mine:.2f}" == f"{printed:.2f}"
        assert block.tp + block.fn == unique  # FN = truths - TP, as darknet counts
        if block.map:  # area under the envelope >= precision x recall at the threshold
            assert block.map >= p * r


def test_a_parsed_block_and_a_farm_score_have_the_same_shape():
    [h100] = blocks_of("alexeyab-gpu-h100-detector-map.log")
    parsed = map_block_evaluation(h100)
    farm = score_evaluation(score(HAND_DETS, HAND_TRUTHS, names=["close"]), "opencv-dnn")
    assert set(farm.classes[0]) == set(parsed.classes[0]) and parsed.evaluator == "darknet-map"
    assert parsed.truths == 619 and math.isclose(parsed.score_map, 0.916611)
    assert set(farm.to_dict()) >= set(parsed.to_dict()) - {"note"}


# -- cadence ---------------------------------------------------------------------------------

def test_should_evaluate_every_n_iterations_and_the_final_checkpoint():
    assert [i for i in range(0, 3501, 100) if should_evaluate(i, 3500, 1000)] == \
        [1000, 2000, 3000, 3500]
    assert should_evaluate(3600, 3500, 1000)  # resumed past the end: still the final one
    assert not should_evaluate(0, 3500, 1000)
    assert [i for i in (100, 200, 300) if should_evaluate(i, 300, 0)] == [300]
    # darknet saved at 1200 and 2100 only: the first checkpoint past each multiple counts
    assert should_evaluate(1200, 5000, 1000, last=None) is False
    assert should_evaluate(1200, 5000, 1000, last=0)
    assert should_evaluate(2100, 5000, 1000, last=1200)
    assert not should_evaluate(1900, 5000, 1000, last=1200)
