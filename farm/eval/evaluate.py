"""Evaluate one checkpoint on a dataset's valid list (a run's: farm.eval.checkpoints).

Evaluators (the result's `evaluator` says which one ran):

- `darknet-map`: `darknet detector map` (AlexeyAB, hank-ai), its block parsed by
  farm.darknet.logparse. The seed's own tool; the reference where the dialect has it.
- `opencv-dnn`: the farm-native path: OpenCV DNN detections (farm.eval.detect) scored by
  farm.eval.mapcalc, which follows AlexeyAB's `validate_detector_map()` (same matching,
  same area-under-curve). The only path for tiled evaluation on full screenshots.
- `darknet-valid`: darknet's own forward pass through pjreddie's `detector valid`, scored
  by mapcalc. Debian's darknet has no `map`; this is the darknet side of the agreement
  check there.

How the two evaluators are shown to agree (within 0.5 mAP points), and what cannot be
shown on a machine with only Debian's darknet:
1. detections: `darknet-valid` vs `opencv-dnn` on the same weights and valid list
   (tests/integration/test_eval.py): darknet's forward pass and OpenCV's give the same
   boxes and scores. pjreddie writes its boxes cut at the image's edges, so that test
   compares with `clip=True`; unclipped (as AlexeyAB's map scores them) the mAPs differ
   by whatever the cut boxes lose, a few points where objects touch the image's border;
2. scoring: mapcalc vs AlexeyAB's C code, by a line-for-line transcription of its AP loop
   run on random detections, by hand-computed cases, and against the numbers in
   ../shared/darknet/logs/*map* that the logs let one recompute (P/R/F1 from TP/FP/FN)
   (tests/unit/test_mapcalc.py);
3. not here: `detector map` itself next to the farm-native mAP on the same weights needs an
   AlexeyAB or hank-ai binary; with one on PATH, `evaluate_checkpoint(…, evaluator=
   "darknet-map")` and `evaluator="opencv"` are the two calls to compare (bench/bench_eval.py
   prints both side by side when given such a binary).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from farm.darknet import dialect as dialects
from farm.darknet.cfg import cfg_dialect
from farm.darknet.events import MapResult
from farm.darknet.logparse import parse_text
from farm.darknet.objdata import read_obj_data, resolve, write_obj_data
from farm.datasets.lint import label_path, lint_list
from farm.errors import BadInput, FarmError, FindingsError
from farm.eval.evaluation import Evaluation
from farm.settings import MAP_TIMEOUT
from farm.eval import mapcalc
from farm.eval.detect import (OPENCV_LAYOUT, check_inference_weights, darknet_detections,
                              load_cfg, output_tail, read_image, run_darknet,
                              shared_detector)

EVALUATORS = ("auto", "darknet-map", "opencv", "darknet-valid")


# ---------------------------------------------------------------------------------------
# One checkpoint


def evaluate_checkpoint(weights: str | os.PathLike, *, data: str | os.PathLike,
                        cfg: str | os.PathLike, evaluator: str = "auto",
                        darknet: str = "darknet", dialect: str = "auto", points: int = 0,
                        iou_thresh: float = mapcalc.IOU_THRESH,
                        conf_thresh: float = mapcalc.CONF_THRESH, tiled: bool = False,
                        tile: tuple[int, int] | None = None, overlap: int | None = None,
                        base_dir: str | os.PathLike | None = None,
                        clip: bool = False, weights_dialect: str | None = None,
                        detector=None) -> Evaluation:
    """mAP@iou_thresh, per-class AP and P/R/F1/TP/FP/FN/avg IoU at conf_thresh of
    `weights` on the valid list of `data` (obj.data).

    `clip` cuts the farm-native boxes at the image's edges, as pjreddie's `detector valid`
    writes them; it is there to compare with that evaluator (AlexeyAB's map does not clip,
    and a box hanging over the edge can then miss IoU 0.5: a few mAP points on images with
    objects at their borders).

    Refuses (BadInput/FindingsError) weights that do not fit `cfg` and a valid list that
    fails the dataset lint, before any detection runs. `weights_dialect`: the darknet
    that wrote the weights, when known; else their header and the cfg tell. Paths are
    made absolute first: darknet runs in a scratch folder. `detector`: the farm-native
    evaluator's network, when the caller holds it loaded already (else loaded once per
    process: farm.eval.detect.shared_detector).
    """
    start = time.monotonic()
    if evaluator not in EVALUATORS:
        raise BadInput(f"unknown evaluator {evaluator!r}", hint=f"use one of {EVALUATORS}")
    mapcalc.check_points(points)
    weights, data, cfg = (os.path.abspath(p) for p in (weights, data, cfg))
    base_dir = os.path.abspath(base_dir) if base_dir else None
    net = load_cfg(cfg)
    needs_darknet = evaluator in ("darknet-map", "darknet-valid")
    found_dialect, binary = resolve_dialect(darknet, dialect, needed=needs_darknet)
    if evaluator == "auto":
        has_map = found_dialect.has_map and binary
        evaluator = "darknet-map" if has_map and not tiled else "opencv"
    # the weights are judged by their own layout (header, cfg, `weights_dialect`: the
    # run's record), against the network the evaluator builds: OpenCV's is AlexeyAB's
    reader = OPENCV_LAYOUT if evaluator == "opencv" else found_dialect
    check_inference_weights(weights, net, weights_dialect, reader=reader)
    data_dialect = (dialects.Dialect.of(dialect) if dialect != "auto"
                    else cfg_dialect(net) or found_dialect)
    valid, names = _valid_and_names(data, net, base_dir)
    report = lint_list(valid, classes=len(names), dialect=data_dialect, role="valid",
                       base_dir=base_dir or os.path.dirname(data),
                       min_images_per_class=None)
    if report.errors:
        raise FindingsError(report.findings, "valid list")
    images = list(report.paths)
    if tiled and evaluator != "opencv":
        raise BadInput(f"--tiled works with the farm-native evaluator only, not {evaluator}",
                       hint="drop --evaluator or use --evaluator opencv")
    if evaluator == "darknet-map":
        if not found_dialect.has_map:
            raise BadInput(f"{binary} is pjreddie's darknet (Debian's), which has no "
                           "`detector map`", hint="use --evaluator opencv or darknet-valid")
        result = _darknet_map(binary, images, names, cfg, weights, points, iou_thresh,
                              conf_thresh)
    else:
        thresholds = dict(names=names, iou_thresh=iou_thresh, conf_thresh=conf_thresh,
                          points=points)
        if evaluator == "opencv":
            dets, truths = _opencv(detector or shared_detector(cfg, weights,
                                                               dialect=weights_dialect),
                                   images, data_dialect, tiled, tile, overlap, clip)
        else:
            dets, truths = _darknet_valid(binary, cfg, weights, images, len(names),
                                          data_dialect)
        result = score_evaluation(mapcalc.score(dets, truths, images=len(images),
                                                **thresholds),
                                  "opencv-dnn" if evaluator == "opencv" else "darknet-valid")
    return replace(result, images=len(images), tiled=tiled,
                   clipped=clip or evaluator == "darknet-valid", weights=weights, cfg=cfg,
                   data=data, valid=valid, seconds=round(time.monotonic() - start, 3))


def resolve_dialect(darknet: str, configured: str, *,
                    needed: bool) -> tuple[dialects.Dialect, str | None]:
    """The dialect (for label paths and weights sizes) and the binary, when there is one.
    Without a darknet binary the farm-native evaluator still works (as pjreddie's rules,
    or the configured dialect)."""
    try:
        return dialects.detect(darknet, configured), dialects.resolve_binary(darknet)
    except FarmError:
        if needed:
            raise
        fallback = configured if configured != "auto" else dialects.Dialect.PJREDDIE
        return dialects.Dialect.of(fallback), None


def _valid_and_names(data: str | os.PathLike, cfg, base_dir) -> tuple[str, list[str]]:
    data = os.path.abspath(data)
    values = read_obj_data(data)
    data_dir = os.path.dirname(data)
    base = os.fspath(base_dir) if base_dir else data_dir
    if "valid" not in values:
        raise BadInput("obj.data has no valid= line: there is nothing to evaluate on",
                       path=data, hint="add valid = <list of validation images>")
    valid = resolve(values["valid"], base, data_dir)
    classes = int(cfg.classes or 0)
    names = [str(i) for i in range(classes)]
    if "names" in values:
        names_path = resolve(values["names"], base, data_dir)
        try:
            listed = [n.strip() for n in Path(names_path).read_text().splitlines() if n.strip()]
        except OSError as e:
            raise BadInput(f"cannot read the names file: {e.strerror}", path=names_path,
                           hint="fix names= in obj.data") from None
        if len(listed) != classes:  # fatal in `detector map` too
            raise BadInput(f"{len(listed)} names but the cfg has classes={classes}",
                           path=names_path, hint="one name per class, in class-id order")
        names = listed
    return valid, names


def _truths(image: str, dialect, size) -> list[mapcalc.Truth]:
    label = label_path(image, dialect)
    return mapcalc.read_truths(image, label, size=size) if label else []


def _opencv(detector, images, dialect, tiled, tile, overlap, clip):
    dets, truths = [], []
    for image in images:
        pixels = read_image(image)
        h, w = pixels.shape[:2]
        found = (detector.detect_tiled(pixels, tile=tile, overlap=overlap) if tiled
                 else detector.detect(pixels))
        if clip:
            found = [f.clipped(w, h) for f in found]
        dets += [mapcalc.Detection(image, f.class_id, f.confidence, (f.cx, f.cy, f.w, f.h))
                 for f in found]
        truths += _truths(image, dialect, (w, h))
    return dets, truths


def _darknet_valid(binary, cfg, weights, images, classes, dialect):
    found = darknet_detections(binary, cfg, weights, images, classes)
    dets, truths = [], []
    for image in images:
        h, w = read_image(image).shape[:2]
        dets += [mapcalc.Detection(image, f.class_id, f.confidence, (f.cx, f.cy, f.w, f.h))
                 for f in found[image]]
        truths += _truths(image, dialect, (w, h))
    return dets, truths


def _darknet_map(binary, images, names, cfg, weights, points, iou_thresh, conf_thresh):
    """`detector map` in a scratch folder (darknet writes files into its cwd), on a copy
    of the valid list with every image absolute (the lint resolved them)."""
    with tempfile.TemporaryDirectory(prefix="farm-map-") as tmp:
        names_path = Path(tmp) / "obj.names"
        names_path.write_text("".join(f"{n}\n" for n in names))
        valid = Path(tmp) / "valid.txt"
        valid.write_text("".join(f"{image}\n" for image in images))
        write_obj_data(Path(tmp) / "obj.data", {"classes": str(len(names)),
                                                "valid": str(valid), "names": str(names_path)})
        argv = dialects.map_argv(binary, Path(tmp) / "obj.data", cfg, weights, points=points,
                                 iou_thresh=iou_thresh, thresh=conf_thresh)
        log = run_darknet(argv, Path(tmp), timeout=MAP_TIMEOUT)
    blocks = [e for e in parse_text(log) if isinstance(e, MapResult)]
    if not blocks:
        raise FarmError(f"darknet detector map printed no mAP; its output ended with:\n"
                        f"{output_tail(log)}",
                        hint="run the same command by hand to see all of it")
    return replace(map_block_evaluation(blocks[-1]), points=points)


# ---------------------------------------------------------------------------------------
# Results


def score_evaluation(s: mapcalc.MapScore, evaluator: str | None = None) -> Evaluation:
    """The farm-native score of one evaluator's detections."""
    return Evaluation(
        map=s.map, iou_thresh=s.iou_thresh, conf_thresh=s.conf_thresh, points=s.points,
        classes=tuple({"id": c.class_id, "name": c.name, "ap": c.ap, "tp": c.tp, "fp": c.fp,
                       "truths": c.truths, "detections": c.detections} for c in s.classes),
        precision=s.precision, recall=s.recall, f1=s.f1, tp=s.tp, fp=s.fp, fn=s.fn,
        avg_iou=s.avg_iou, detections=s.detections, truths=s.truths, evaluator=evaluator)


def map_block_evaluation(r: MapResult) -> Evaluation:
    """A parsed `detector map` block. darknet prints -nan (None here) for the mAP and a
    class AP when there were no detections at all."""
    return Evaluation(
        map=r.map, iou_thresh=r.iou_thresh, conf_thresh=r.conf_thresh,
        classes=tuple({"id": c.class_id, "name": c.name, "ap": c.ap, "tp": c.tp, "fp": c.fp,
                       "truths": None, "detections": None} for c in r.classes),
        precision=r.precision, recall=r.recall, f1=r.f1, tp=r.tp, fp=r.fp, fn=r.fn,
        avg_iou=r.avg_iou,
        truths=(r.tp + r.fn) if r.tp is not None and r.fn is not None else None,
        evaluator="darknet-map",
        note="darknet printed -nan: no detections" if r.map is None else None)


def format_result(result: Evaluation) -> str:
    """The result as darknet prints its mAP block, plus which evaluator ran."""
    def pct(v):
        return "-nan" if v is None else f"{v * 100:.2f}"

    def num(v):
        return "-nan" if v is None else f"{v:.2f}"
    r = result
    lines = [f"class_id = {c['id']}, name = {c['name']}, ap = {pct(c['ap'])}%   "
             f"(TP = {c['tp']}, FP = {c['fp']})" for c in r.classes]
    c = r.conf_thresh
    lines += [f"for conf_thresh = {c:.2f}, precision = {num(r.precision)}, "
              f"recall = {num(r.recall)}, F1-score = {num(r.f1)}",
              f"for conf_thresh = {c:.2f}, TP = {r.tp}, FP = {r.fp}, "
              f"FN = {r.fn}, average IoU = {pct(r.avg_iou)} %"]
    points = r.points or 0
    how = f"used {points} Recall-points" if points else \
        "used Area-Under-Curve for each unique Recall"
    m = r.map
    lines += [f"IoU threshold = {r.iou_thresh * 100:.0f} %, {how}",
              f"mean average precision (mAP@{r.iou_thresh:.2f}) = "
              f"{'-nan' if m is None else f'{m:.6f}'}, or {pct(m)} %",
              f"evaluator: {r.evaluator}{' (tiled)' if r.tiled else ''}, "
              f"{'?' if r.images is None else r.images} images in {r.seconds or 0:.2f} s"]
    if r.screens_id:
        tw, th = r.tile
        lines.append(f"screens set {r.screens_id}: whole screenshots, {tw}x{th} "
                     f"tiles overlapping by {r.overlap} px")
    return "\n".join(lines)
