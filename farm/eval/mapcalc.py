"""Mean average precision, computed the way AlexeyAB's `darknet detector map` computes it.

The farm scores detections itself wherever darknet cannot (Debian's pjreddie build has no
`map`; tiled detection on full screenshots is the farm's own), and the two numbers must be
comparable. So this module follows `validate_detector_map()` (AlexeyAB src/detector.c)
step by step rather than a textbook:

- a detection matches the ground-truth box of its class with the highest IoU, counted
  only when that IoU is strictly above `iou_thresh`; detections are then ranked by
  confidence over the whole dataset, and a detection whose truth was already taken by a
  better-ranked one is a false positive (no re-assignment to the second-best truth);
- `points=0` (darknet's default): area under the monotone precision envelope over every
  unique recall; `points=N` (11: PASCAL VOC 2007, 101: MS COCO): mean over N evenly spaced
  recalls of the best precision at a recall at least that high;
- mAP is the mean over *all* classes of the names file, a class without truths counting 0;
- at `conf_thresh` (0.25): TP/FP/FN, precision, recall and F1 as darknet prints them, a
  detection being a TP there when it found a truth no earlier detection of the same image
  found; average IoU is the IoU sum of those TPs divided by TP + FP (darknet's choice).

Where darknet prints `-nan` (0/0), the value here is None. One deliberate difference: with
no detections at all darknet reads `pr[-1]` (out of bounds) and prints `-nan` or `0.00`
at random (both are in ../shared/darknet/logs); here the AP is then 0.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from farm.errors import BadInput

#: (cx, cy, w, h): centre and size, in any unit that is the same for all boxes of one image.
Box = tuple[float, float, float, float]

IOU_THRESH = 0.5
CONF_THRESH = 0.25  # darknet's -thresh default for P/R/F1 in `detector map`


@dataclass(frozen=True, slots=True)
class Detection:
    image: str
    class_id: int
    confidence: float
    box: Box


@dataclass(frozen=True, slots=True)
class Truth:
    image: str
    class_id: int
    box: Box


@dataclass
class ClassScore:
    class_id: int
    name: str
    ap: float
    truths: int
    detections: int
    tp: int  # at conf_thresh, as in darknet's `(TP = …, FP = …)` per class
    fp: int


@dataclass
class MapScore:
    map: float
    classes: list[ClassScore]
    iou_thresh: float
    conf_thresh: float
    points: int
    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    avg_iou: float
    detections: int
    truths: int
    images: int = field(default=0)

    def to_dict(self) -> dict:
        return asdict(self)


def iou(a: Box, b: Box) -> float:
    """darknet's box_iou on centre-format boxes (0 when they do not overlap)."""
    w = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    h = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def check_points(points: int) -> int:
    """0 (area under curve) or N >= 2 recall points; darknet divides by N - 1."""
    if points != 0 and points < 2:
        raise BadInput(f"points={points}: use 0 (area under the curve), 11 or 101",
                       hint="`-points 0` is darknet's default and the one to compare with")
    return points


def average_precision(precision: Sequence[float], recall: Sequence[float],
                      points: int = 0) -> float:
    """AP of one class from its precision/recall after each of its ranked detections."""
    n = len(precision)
    if n == 0:
        return 0.0
    if points == 0:  # darknet's loop, term for term (same float results)
        ap = 0.0
        last_recall, last_precision = recall[-1], precision[-1]
        for r in range(n - 2, -1, -1):
            delta = last_recall - recall[r]
            last_recall = recall[r]
            if precision[r] > last_precision:
                last_precision = precision[r]
            ap += delta * last_precision
        return ap + last_recall * last_precision
    check_points(points)
    rec = np.asarray(recall, dtype=np.float64)
    envelope = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    levels = np.arange(points, dtype=np.float64) / (points - 1)
    first = np.searchsorted(rec, levels, side="left")  # recall never decreases with rank
    best = np.where(first < n, envelope[np.minimum(first, n - 1)], 0.0)
    return float(best.sum() / points)


def threshold_stats(tp: int, fp: int, fn: int) -> tuple[float | None, float | None,
                                                        float | None]:
    """(precision, recall, F1) as darknet prints them; None where it prints -nan."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None or precision + recall == 0:
        return precision, recall, None
    return precision, recall, 2 * precision * recall / (precision + recall)


def score(detections: Iterable[Detection], truths: Iterable[Truth], *,
          names: Sequence[str] | int, iou_thresh: float = IOU_THRESH,
          conf_thresh: float = CONF_THRESH, points: int = 0,
          images: int | None = None) -> MapScore:
    """mAP, per-class AP and the threshold statistics of `detections` against `truths`."""
    names = [str(i) for i in range(names)] if isinstance(names, int) else list(names)
    classes = len(names)
    check_points(points)
    truths_of: dict[str, list[Truth]] = defaultdict(list)
    truth_count = [0] * classes
    for t in truths:
        if not 0 <= t.class_id < classes:
            raise BadInput(f"ground truth of class {t.class_id} but only {classes} classes",
                           path=t.image, hint="lint the dataset: `farm dataset lint`")
        truths_of[t.image].append(t)
        truth_count[t.class_id] += 1
    dets_of: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        if 0 <= d.class_id < classes and d.confidence > 0:
            dets_of[d.image].append(d)

    ranked, thr = _match(dets_of, truths_of, iou_thresh, conf_thresh, classes)
    # darknet's qsort leaves ties in any order; the farm ranks them one fixed way, and
    # compares confidences at the six decimals `detector valid` prints, so that two
    # evaluators of the same weights rank alike even on an untrained net's near-ties
    ranked.sort(key=lambda r: (-round(r[0], 6), r[1], r[2] or ("", -1)))
    per_class = _pr_curves(ranked, truth_count, classes)
    scores = []
    for c in range(classes):
        precision, recall = per_class[c]
        scores.append(ClassScore(c, names[c], average_precision(precision, recall, points),
                                 truth_count[c], len(precision), thr["tp_c"][c],
                                 thr["fp_c"][c]))
    tp, fp = thr["tp"], thr["fp"]
    fn = sum(truth_count) - tp
    p, r, f1 = threshold_stats(tp, fp, fn)
    return MapScore(
        map=sum(s.ap for s in scores) / classes if classes else 0.0, classes=scores,
        iou_thresh=iou_thresh, conf_thresh=conf_thresh, points=points, tp=tp, fp=fp, fn=fn,
        precision=p, recall=r, f1=f1, avg_iou=thr["iou"] / (tp + fp) if tp + fp else 0.0,
        detections=len(ranked), truths=sum(truth_count),
        images=images if images is not None else len(set(truths_of) | set(dets_of)))


def _match(dets_of, truths_of, iou_thresh, conf_thresh, classes):
    """Per image: each detection's best truth (ranked later), and the counts at threshold.

    Within an image darknet visits detections in its NMS order, which for one class is by
    confidence, best first; the same order is used here for every class count.
    """
    ranked: list[tuple[float, int, tuple[str, int] | None]] = []
    thr = {"tp": 0, "fp": 0, "iou": 0.0, "tp_c": [0] * classes, "fp_c": [0] * classes}
    for image, dets in dets_of.items():
        image_truths = truths_of.get(image, [])
        found: set[int] = set()
        for d in sorted(dets, key=lambda d: -d.confidence):
            best, best_iou = -1, 0.0
            for j, t in enumerate(image_truths):
                if t.class_id == d.class_id:
                    v = iou(d.box, t.box)
                    if v > iou_thresh and v > best_iou:
                        best, best_iou = j, v
            ranked.append((d.confidence, d.class_id, (image, best) if best >= 0 else None))
            if d.confidence > conf_thresh:
                if best >= 0 and best not in found:
                    thr["tp"] += 1
                    thr["tp_c"][d.class_id] += 1
                    thr["iou"] += best_iou
                else:
                    thr["fp"] += 1
                    thr["fp_c"][d.class_id] += 1
            found.add(best)
    return ranked, thr


def _pr_curves(ranked, truth_count, classes):
    """Precision and recall after each ranked detection, per class."""
    taken: set[tuple[str, int]] = set()
    tp = [0] * classes
    fp = [0] * classes
    curves: list[tuple[list[float], list[float]]] = [([], []) for _ in range(classes)]
    for _, c, truth in ranked:
        if truth is not None and truth not in taken:
            taken.add(truth)
            tp[c] += 1
        else:
            fp[c] += 1
        precision, recall = curves[c]
        precision.append(tp[c] / (tp[c] + fp[c]))
        recall.append(tp[c] / truth_count[c] if truth_count[c] else 0.0)
    return curves


def read_truths(image: str, label_path: str, *, size: tuple[float, float] = (1.0, 1.0)
                ) -> list[Truth]:
    """Ground truth of one image from its YOLO label file, as darknet's read_boxes() reads
    it (a missing file is an image without objects). `size` scales the relative boxes, e.g.
    to pixels when the detections are in pixels."""
    try:
        with open(label_path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    w, h = size
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            if parts:
                break  # fscanf stops at the first line it cannot read
            continue
        try:
            c, x, y, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
        except ValueError:
            break
        out.append(Truth(image, c, (x * w, y * h, bw * w, bh * h)))
    return out
