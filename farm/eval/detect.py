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
(as `farm dataset tile` cuts them for training) go through the network in batches (one
`blobFromImages` and one forward pass per `TILE_BATCH` tiles), the boxes of all tiles are
mapped back at once and merged by farm.eval.nms.merge_tiles (a mark straddling a tile
edge, or seen whole by two tiles, is one box): no Python work per tile. A box with less
than `MIN_BOX_PX` of height or width inside the image is no detection and is dropped.
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
from farm.darknet.dialect import Dialect, valid_argv
from farm.darknet.process import DarknetProcess
from farm.darknet.weights import check_weights
from farm.datasets.tile import PAD_VALUE, tile_positions
from farm.errors import BadInput, FarmError, FindingsError, Severity
from farm.eval.nms import NMS_THRESH, cut_by_inner_edge, merge_tiles, nms, own_part

DETECT_THRESH = 0.005  # darknet's `detector map` / `valid` threshold
#: The network OpenCV's importer builds from a cfg: AlexeyAB's ([route] groups= honoured).
OPENCV_LAYOUT = Dialect.ALEXEYAB
TILE_OVERLAP = 64      # farm dataset tile's default
#: tiles per forward pass in tiled detection. Small passes are the fastest here: on a
#: quiet 2-core machine with OpenCV 4.14, medians of 5 alternated runs per size for one
#: 1080x2400 screenshot (`bench/bench_tiled.py` networks): yolov4-tiny 416x416 (21
#: tiles) 881/879/813/1003 ms at 2/3/4/8 tiles a pass, yolov3-tiny 745/694/767/879 ms,
#: the micro 64x64 net (2 442 tiles) 561/651/478/491 ms. A pass of 8 416x416 tiles is a
#: 16 MB blob, beyond the caches; OpenCV's per-call cost is small.
TILE_BATCH = 4
#: px: a tiled box with less height or width than this inside the image is dropped
MIN_BOX_PX = 1.0


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
    if any(f.severity is Severity.ERROR for f in findings):
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
        size), in the image's pixels. `overlap` defaults to 64 px (half a small tile).

        The network runs at the tile's size: a tile size other than the network's must be
        a multiple of 32 (the network is convolutional; the marks stay at true scale)."""
        tw, th = tile or (self.width, self.height)
        if overlap is None:
            overlap = min(TILE_OVERLAP, min(tw, th) // 2)
        if overlap < 0 or overlap >= min(tw, th):
            raise BadInput(f"tile overlap {overlap} must be at least 0 and less than the tile "
                           f"({tw}x{th})", hint="use a few times the size of the marks, e.g. 64")
        if (tw, th) != (self.width, self.height) and (tw % 32 or th % 32):
            raise BadInput(f"tile {tw}x{th} is not the network's {self.width}x{self.height} "
                           "nor a multiple of 32 (the network runs at the tile's size)",
                           hint=f"leave the tile size out, or use e.g. {self.width}x"
                                f"{self.height}")
        h, w = image.shape[:2]
        if w < tw or h < th:  # pad once: every crop is then a whole tile
            image = cv2.copyMakeBorder(image, 0, max(th - h, 0), 0, max(tw - w, 0),
                                       cv2.BORDER_CONSTANT, value=PAD_VALUE)
        xs, ys = tile_positions(w, tw, overlap), tile_positions(h, th, overlap)
        origins = np.array([(x, y) for y in ys for x in xs], np.int64)
        parts = []
        for start in range(0, len(origins), TILE_BATCH):
            chunk = origins[start:start + TILE_BATCH]
            boxes, scores, which = self.raw_tiles([image[y:y + th, x:x + tw] for x, y in chunk])
            boxes[:, :2] += chunk[which]
            parts.append((boxes, scores, which + start))
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        tiles = np.concatenate([p[2] for p in parts])
        inside_w = np.minimum(boxes[:, 0] + boxes[:, 2] / 2, w) - \
            np.maximum(boxes[:, 0] - boxes[:, 2] / 2, 0)
        inside_h = np.minimum(boxes[:, 1] + boxes[:, 3] / 2, h) - \
            np.maximum(boxes[:, 1] - boxes[:, 3] / 2, 0)
        real = (inside_w >= MIN_BOX_PX) & (inside_h >= MIN_BOX_PX)
        boxes, scores, tiles = boxes[real], scores[real], tiles[real]
        cut = cut_by_inner_edge(boxes, origins[tiles], (tw, th), (w, h))
        inside = own_part(boxes, origins[tiles], xs, ys, (tw, th))
        return _found(boxes, merge_tiles(boxes, scores, tiles, cut, inside, self.nms))

    def raw_tiles(self, tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (tile pixels) and class scores above the threshold of equally sized
        tiles, in one forward pass at their size; and each box's tile (index in `tiles`)."""
        th, tw = tiles[0].shape[:2]
        if tiles[0].ndim == 2 and self.channels == 3:
            tiles = [cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) for t in tiles]
        elif tiles[0].ndim == 3 and self.channels == 1:
            tiles = [cv2.cvtColor(t, cv2.COLOR_BGR2GRAY) for t in tiles]
        blob = cv2.dnn.blobFromImages(tiles, 1 / 255.0, (tw, th), swapRB=self.channels == 3,
                                      crop=False)
        self.net.setInput(blob)
        try:
            outs = self.net.forward(self.outputs)
        except cv2.error as e:
            raise BadInput(f"OpenCV cannot run this network on {tw}x{th} tiles: "
                           f"{str(e).strip().splitlines()[-1]}", path=self.cfg.path,
                           hint="use the network's own size as the tile size") from None
        rows = np.concatenate([o.reshape(len(tiles), -1, o.shape[-1]) for o in outs], axis=1)
        which, at = np.nonzero(rows[:, :, 5:5 + self.classes].max(axis=2) > 0)
        found = rows[which, at].astype(np.float64)
        return found[:, :4] * (tw, th, tw, th), found[:, 5:5 + self.classes], which


_LOADED: dict[tuple, DnnDetector] = {}
#: networks kept loaded per process by shared_detector (a checkpoint's tile and screens
#: evaluations, a bot's repeated calls): each holds its weights and OpenCV's buffers
LOADED_NETWORKS = 2


def shared_detector(cfg: str | os.PathLike, weights: str | os.PathLike, *,
                    dialect=None) -> DnnDetector:
    """The process's loaded network for (cfg, weights), loaded once: the file's path,
    size and mtime are the key, so a rewritten weights file is loaded again."""
    key = tuple((os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
                if os.path.exists(p) else (os.path.abspath(p),)
                for p in (os.fspath(cfg), os.fspath(weights))) + (str(dialect),)
    detector = _LOADED.pop(key, None) or DnnDetector(cfg, weights, dialect=dialect)
    _LOADED[key] = detector  # newest last
    while len(_LOADED) > LOADED_NETWORKS:
        _LOADED.pop(next(iter(_LOADED)))
    return detector


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
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
        if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
            continue  # nothing of it is on the image
        out.append({"class_id": f.class_id, "name": _name(names, f.class_id),
                    "confidence": round(f.confidence, 6), "x0": round(x0, 1),
                    "y0": round(y0, 1), "x1": round(x1, 1), "y1": round(y1, 1)})
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

