"""Detections from a darknet cfg + weights: OpenCV's DNN module, or darknet itself.

Two sources, so that each checks the other (docs: evaluate.py):

- `DnnDetector` runs the network in-process with OpenCV's darknet importer (OpenCV 4.x;
  5.x dropped it). It reproduces what `detector map` feeds its scorer: the image stretched
  to the network size, every box whose objectness × class probability is above 0.005,
  darknet's greedy per-class NMS at IoU 0.45 (letterboxed instead of stretched when the
  cfg sets AlexeyAB's `letter_box=1`). OpenCV's [yolo] layer zeroes scores under
  its own `thresh` (0.2 by default), so the network is loaded from a copy of the cfg with
  `thresh=0.005` in each head.
- `darknet_detections` runs `darknet detector valid` (the pjreddie/Debian build has no
  `map`) and reads the per-class result files it writes. Differences to know: pjreddie
  letterboxes non-square images (OpenCV and AlexeyAB's map stretch them) and clips boxes
  to the image.

`detect_tiled` finds small marks in full-size screenshots: overlapping network-sized tiles
(as `farm dataset tile` cuts them for training), boxes mapped back, NMS across tiles, and
a box cut by a tile's inner edge dropped when a whole box from a neighbouring tile covers it.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from farm.darknet.cfg import Cfg
from farm.darknet.dialect import valid_argv
from farm.darknet.process import DarknetProcess
from farm.darknet.weights import check_weights
from farm.datasets.tile import PAD_VALUE, tile_positions
from farm.errors import BadInput, FarmError, FindingsError

DETECT_THRESH = 0.005  # darknet's `detector map` / `valid` threshold
#: The network OpenCV's importer builds from a cfg: AlexeyAB's ([route] groups= honoured).
OPENCV_LAYOUT = "alexeyab"
NMS_THRESH = 0.45
TILE_OVERLAP = 64      # farm dataset tile's default
_CUT_MARGIN = 2.0      # px: a box this close to a tile's inner edge was cut by it
_COVERED = 0.5         # overlap / smaller area above which a cut box duplicates a whole one
_AS_CONFIDENT = 0.25   # … provided the whole box has at least this share of its confidence


@dataclass(frozen=True, slots=True)
class Found:
    """One detection in pixels of the image it was found in (centre and size)."""

    class_id: int
    confidence: float
    cx: float
    cy: float
    w: float
    h: float

    @property
    def corners(self) -> tuple[float, float, float, float]:
        return (self.cx - self.w / 2, self.cy - self.h / 2,
                self.cx + self.w / 2, self.cy + self.h / 2)

    def clipped(self, width: int, height: int) -> "Found":
        """The box cut at the image's edges, as pjreddie's `detector valid` writes it."""
        x0, y0, x1, y1 = self.corners
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width - 1.0), min(y1, height - 1.0)
        return Found(self.class_id, self.confidence, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0,
                     y1 - y0)


def check_inference_weights(weights: str | os.PathLike, cfg: Cfg, dialect=None, *,
                            reader=OPENCV_LAYOUT) -> None:
    """Refuse weights that would detect nothing or garbage: truncated files, weights of
    another cfg, `*.conv.N` backbones, weights laid out for another network than the
    one `reader` builds. `dialect`: the darknet that wrote them, when known (else their
    header and the cfg's features tell). Every finding is in the error."""
    if not os.path.isfile(weights):
        raise BadInput("weights file does not exist", path=str(weights),
                       hint="check the path of the .weights file")
    findings = check_weights(weights, cfg, for_inference=True, dialect=dialect, reader=reader)
    if any(f.severity == "error" for f in findings):
        raise FindingsError(findings, "weights")


def load_cfg(path: str | os.PathLike) -> Cfg:
    cfg = Cfg.load(path)
    if cfg.net is None or not cfg.output_layers():
        raise BadInput("not a detector cfg: it needs [net] and a [yolo] or [region] layer",
                       path=str(path), hint="pass the cfg the weights were trained with")
    return cfg


class DnnDetector:
    """A darknet network run by OpenCV: detections as `detector map` sees them."""

    def __init__(self, cfg: str | os.PathLike | Cfg, weights: str | os.PathLike, *,
                 dialect=None, thresh: float = DETECT_THRESH, nms: float = NMS_THRESH):
        """`dialect`: the darknet that wrote the weights, when known."""
        self.cfg = cfg if isinstance(cfg, Cfg) else load_cfg(cfg)
        check_inference_weights(weights, self.cfg, dialect)
        self.width, self.height = int(self.cfg.width or 0), int(self.cfg.height or 0)
        self.channels = int(self.cfg.net_get("channels", "3") or 3)
        self.classes = int(self.cfg.classes or 0)
        self.letterbox = self.cfg.net_get("letter_box", "0") == "1"  # AlexeyAB's option
        self.nms = nms
        inference = self.cfg.copy()
        for head in inference.output_layers():
            head.set("thresh", thresh)
        try:
            self.net = cv2.dnn.readNetFromDarknet(
                np.frombuffer(inference.dumps().encode(), np.uint8),
                np.fromfile(os.fspath(weights), np.uint8))
        except cv2.error as e:
            raise BadInput(f"OpenCV cannot load this network: {str(e).strip().splitlines()[-1]}",
                           path=self.cfg.path, hint="OpenCV 4.x reads [yolo] and [region] "
                           "heads; evaluate other cfgs with darknet (--evaluator darknet-valid)"
                           ) from None
        self.outputs = self.net.getUnconnectedOutLayersNames()

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4: cx, cy, w, h in image pixels) and class scores (N, classes) above
        the threshold, before NMS."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self.channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = image.shape[:2]
        if self.letterbox:
            image, (sx, sy, ox, oy) = _letterbox(image, self.width, self.height)
        else:
            sx, sy, ox, oy = 1.0, 1.0, 0.0, 0.0
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (self.width, self.height),
                                     swapRB=self.channels == 3, crop=False)
        self.net.setInput(blob)
        rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in self.net.forward(self.outputs)])
        scores = rows[:, 5:5 + self.classes].astype(np.float64)
        keep = scores.max(axis=1) > 0
        boxes = rows[keep, :4].astype(np.float64)
        boxes[:, :2] = (boxes[:, :2] - (ox, oy)) / (sx, sy)
        boxes[:, 2:] /= (sx, sy)
        return boxes * (w, h, w, h), scores[keep]

    def detect(self, image: np.ndarray) -> list[Found]:
        boxes, scores = self.raw(image)
        return _found(boxes, nms(boxes, scores, self.nms))

    def detect_tiled(self, image: np.ndarray, *, tile: tuple[int, int] | None = None,
                     overlap: int | None = None) -> list[Found]:
        """Detections on a large image from overlapping tiles (w, h; default the network
        size), in the image's pixels. `overlap` defaults to 64 px (half a small tile)."""
        tw, th = tile or (self.width, self.height)
        if overlap is None:
            overlap = min(TILE_OVERLAP, min(tw, th) // 2)
        if overlap < 0 or overlap >= min(tw, th):
            raise BadInput(f"tile overlap {overlap} must be at least 0 and less than the tile "
                           f"({tw}x{th})", hint="use a few times the size of the marks, e.g. 64")
        h, w = image.shape[:2]
        all_boxes, all_scores, cut = [], [], []
        for y in tile_positions(h, th, overlap):
            for x in tile_positions(w, tw, overlap):
                crop = image[y:y + th, x:x + tw]
                if crop.shape[0] < th or crop.shape[1] < tw:
                    crop = cv2.copyMakeBorder(crop, 0, th - crop.shape[0], 0, tw - crop.shape[1],
                                              cv2.BORDER_CONSTANT, value=PAD_VALUE)
                boxes, scores = self.raw(crop)
                scores = nms(boxes, scores, self.nms)  # within the tile, as darknet would
                keep = scores.max(axis=1) > 0 if len(scores) else np.zeros(0, bool)
                boxes, scores = boxes[keep], scores[keep]
                boxes[:, 0] += x
                boxes[:, 1] += y
                all_boxes.append(boxes)
                all_scores.append(scores)
                cut.append(_cut_by_inner_edge(boxes, (x, y, tw, th), (w, h)))
        boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4))
        scores = np.concatenate(all_scores) if all_scores else np.zeros((0, self.classes))
        scores = _drop_cut_duplicates(boxes, scores, np.concatenate(cut) if cut else
                                      np.zeros(0, bool))
        return _found(boxes, nms(boxes, scores, self.nms))  # across tiles


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float = NMS_THRESH) -> np.ndarray:
    """darknet's do_nms_sort: per class, best first, zero the score of every later box
    whose IoU with a kept one is above `thresh`. Returns the new scores.

    An undertrained network leaves thousands of boxes above darknet's 0.005 threshold on a
    416x416 image, so the overlapping pairs are found in vectorised blocks first; the
    greedy pass then only visits each box's few neighbours.
    """
    scores = scores.copy()
    n = len(boxes)
    if n == 0:
        return scores
    first, second = _overlapping_pairs(boxes, thresh)
    for c in range(scores.shape[1]):
        s = scores[:, c]
        order = np.argsort(-s, kind="stable")
        order = order[s[order] > 0]
        rank = np.full(n, n, np.int64)
        rank[order] = np.arange(len(order))
        later = (rank[first] < rank[second]) & (rank[second] < n)
        a, b = first[later], second[later]
        by_a = np.argsort(a, kind="stable")
        a, b = a[by_a], b[by_a]
        starts = np.searchsorted(a, np.arange(n + 1))
        suppressed = np.zeros(n, bool)
        for i in order:
            if not suppressed[i] and starts[i] < starts[i + 1]:
                suppressed[b[starts[i]:starts[i + 1]]] = True
        s[suppressed] = 0
    return scores


def _overlapping_pairs(boxes: np.ndarray, thresh: float, block: int = 1024
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), both orders, of boxes whose IoU is above `thresh`.

    A sweep along x: with the boxes sorted by their left edge, a box can only overlap the
    ones whose left edge lies within its own width, so only those pairs are measured.
    """
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    area = boxes[:, 2] * boxes[:, 3]
    by_x = np.argsort(x0, kind="stable")
    ends = np.searchsorted(x0[by_x], x1[by_x], side="left")  # first left edge past the box
    firsts, seconds = [], []
    for start in range(0, len(boxes), block):
        pos = np.arange(start, min(start + block, len(boxes)))
        counts = np.maximum(ends[pos] - pos - 1, 0)
        if not counts.sum():
            continue
        a = np.repeat(pos, counts)
        b = a + 1 + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        i, j = by_x[a], by_x[b]
        iw = np.minimum(x1[i], x1[j]) - np.maximum(x0[i], x0[j])
        ih = np.minimum(y1[i], y1[j]) - np.maximum(y0[i], y0[j])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            over = inter / (area[i] + area[j] - inter) > thresh
        firsts += [i[over], j[over]]
        seconds += [j[over], i[over]]
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _letterbox(image: np.ndarray, width: int, height: int
               ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """darknet's letterbox_image: scaled to fit, centred on grey (0.5). Returns the image
    and where it sits in the network's input (scale and offset, as fractions)."""
    h, w = image.shape[:2]
    if width / w < height / h:
        nw, nh = width, (h * width) // w
    else:
        nw, nh = (w * height) // h, height
    boxed = np.full((height, width, image.shape[2]), 128, np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    boxed[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return boxed, (nw / width, nh / height, x / width, y / height)


def _found(boxes: np.ndarray, scores: np.ndarray) -> list[Found]:
    """One Found per box and class with a score left (as darknet's map counts them),
    best first."""
    rows, cols = np.nonzero(scores > 0)
    out = [Found(int(c), float(scores[r, c]), *map(float, boxes[r])) for r, c in zip(rows, cols)]
    return sorted(out, key=lambda f: -f.confidence)


def _cut_by_inner_edge(boxes: np.ndarray, rect: tuple[int, int, int, int],
                       size: tuple[int, int]) -> np.ndarray:
    """Which boxes touch an edge of their tile that is not an edge of the image."""
    x, y, tw, th = rect
    w, h = size
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    m = _CUT_MARGIN
    return (((x > 0) & (x0 <= x + m)) | ((y > 0) & (y0 <= y + m))
            | ((x + tw < w) & (x1 >= x + tw - m)) | ((y + th < h) & (y1 >= y + th - m)))


def _drop_cut_duplicates(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Zero a cut box's class score where a whole box of that class, from another tile and
    about as confident, mostly overlaps it (over the smaller area): the same mark, seen
    whole by the neighbouring tile. A cut box may be larger than the mark (the network
    guesses past the tile's edge) or smaller (half a mark)."""
    scores = scores.copy()
    whole = np.nonzero(~cut)[0]
    for i in np.nonzero(cut)[0]:
        for c in np.nonzero(scores[i] > 0)[0]:
            others = whole[scores[whole, c] >= _AS_CONFIDENT * scores[i, c]]
            if len(others) and _overlap_of_smaller(boxes[i], boxes[others]).max() > _COVERED:
                scores[i, c] = 0
    return scores


def _overlap_of_smaller(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area, of `box` with each of `others`."""
    iw = np.minimum(box[0] + box[2] / 2, others[:, 0] + others[:, 2] / 2) - \
        np.maximum(box[0] - box[2] / 2, others[:, 0] - others[:, 2] / 2)
    ih = np.minimum(box[1] + box[3] / 2, others[:, 1] + others[:, 3] / 2) - \
        np.maximum(box[1] - box[3] / 2, others[:, 1] - others[:, 3] / 2)
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    smaller = np.minimum(box[2] * box[3], others[:, 2] * others[:, 3])
    return inter / np.maximum(smaller, 1e-9)


def read_image(path: str | os.PathLike) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput("cannot read the image (missing, empty or not an image)",
                       path=str(path), hint="pass a JPEG or PNG file")
    return image


def annotate(image: np.ndarray, found: list[Found], names: list[str],
             thresh: float) -> np.ndarray:
    """A copy of `image` with the detections at or above `thresh` boxed and labelled."""
    out = image.copy()
    scale = max(out.shape[:2]) / 1000
    for f in found:
        if f.confidence < thresh:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in f.corners)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 255), max(1, round(2 * scale)))
        cv2.putText(out, f"{_name(names, f.class_id)} {f.confidence:.0%}",
                    (x0, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, 0.6 * scale),
                    (0, 0, 255), max(1, round(scale)), cv2.LINE_AA)
    return out


def found_json(found: list[Found], names: list[str], thresh: float,
               size: tuple[int, int]) -> list[dict]:
    """Detections at or above `thresh` as JSON: corners in pixels, clipped to the image."""
    w, h = size
    out = []
    for f in found:
        if f.confidence < thresh:
            continue
        x0, y0, x1, y1 = f.corners
        out.append({"class_id": f.class_id, "name": _name(names, f.class_id),
                    "confidence": round(f.confidence, 6),
                    "x0": round(max(x0, 0.0), 1), "y0": round(max(y0, 0.0), 1),
                    "x1": round(min(x1, float(w)), 1), "y1": round(min(y1, float(h)), 1)})
    return out


def _name(names: list[str], class_id: int) -> str:
    return names[class_id] if class_id < len(names) else str(class_id)


# ---------------------------------------------------------------------------------------
# darknet's own detections


def darknet_detections(binary: str, cfg: str | os.PathLike, weights: str | os.PathLike,
                       images: list[str], classes: int, *, timeout: float = 3600.0
                       ) -> dict[str, list[Found]]:
    """Detections of `darknet detector valid` (pjreddie), per image path, in pixels.

    darknet names results by image basename, so each image is linked under a unique name;
    the class names are neutral (`c0`, …) because darknet makes file names of them.
    pjreddie's `valid` segfaults when its results folder is missing: it is made here.
    """
    with tempfile.TemporaryDirectory(prefix="farm-valid-") as tmp:
        root = Path(tmp)
        (root / "frames").mkdir()
        (root / "results").mkdir()
        ids = {}
        with open(root / "valid.txt", "w") as listing:
            for k, image in enumerate(images):
                link = root / "frames" / f"i{k:06d}{os.path.splitext(image)[1]}"
                os.symlink(os.path.abspath(image), link)
                ids[link.stem] = image
                listing.write(f"{link}\n")
        (root / "names.txt").write_text("".join(f"c{j}\n" for j in range(classes)))
        (root / "obj.data").write_text(
            f"classes = {classes}\nvalid = {root / 'valid.txt'}\nnames = {root / 'names.txt'}\n"
            f"results = {root / 'results'}\n")
        argv = valid_argv(binary, root / "obj.data", cfg, weights)
        log = run_darknet(argv, root, timeout)
        found: dict[str, list[Found]] = {image: [] for image in images}
        for j in range(classes):
            path = root / "results" / f"comp4_det_test_c{j}.txt"
            if not path.exists():
                raise FarmError(f"darknet detector valid wrote no {path.name}; its output "
                                f"ended with:\n{output_tail(log)}",
                                hint="check the cfg and weights")
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 6 or parts[0] not in ids:
                    continue
                p, x0, y0, x1, y1 = (float(v) for v in parts[1:])
                x0, y0, x1, y1 = x0 - 1, y0 - 1, x1 - 1, y1 - 1  # darknet writes 1-based
                found[ids[parts[0]]].append(Found(j, p, (x0 + x1) / 2, (y0 + y1) / 2,
                                                  x1 - x0, y1 - y0))
        return found


def run_darknet(argv: list[str], cwd: Path, timeout: float) -> str:
    """Run a short darknet command to its end; its output, or a FarmError saying why not."""
    proc = DarknetProcess(argv, cwd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while (chunk := proc.read(timeout=1.0)) is not None:
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise FarmError(f"{' '.join(argv[:3])} did not finish in {timeout:g} s")
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = b"".join(chunks).decode(errors="replace")
    if rc != 0:
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited {rc}"
        raise FarmError(f"{' '.join(os.path.basename(a) for a in argv[:3])} {how}; its "
                        f"output ended with:\n{output_tail(log)}",
                        hint="run the same command by hand to see all of it")
    return log


def output_tail(log: str, lines: int = 8) -> str:
    return "\n".join(log.replace("\r", "\n").strip().splitlines()[-lines:])

