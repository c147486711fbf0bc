"""Synthesis that learns from the user's own labels (`farm dataset synth --from-screens`).

farm.datasets.synth draws its own marks on its own backgrounds; a network trained there
meets the user's screenshots as strangers (measured: 91 % mAP on its tiles, 49 % on
screenshots drawn differently). Here everything comes from a screens set
(farm.datasets.screens) of the user's labelled screenshots:

- backgrounds are those screenshots with every labelled mark painted out: the box (and a
  small ring around it) is covered with the patch beside it that matches the ring best,
  feathered in; where no clean patch exists, or the patch would still show the mark,
  OpenCV's inpainting fills it from the ring inwards. A painted screen never holds a
  labelled mark (tests/unit/test_fromscreens.py checks every box);
- mark templates are the labelled marks themselves, cut out by the difference between
  the screenshot and its painted version (what differs is the mark), plus any template
  files given (PNG with transparency);
- each pasted mark takes a size drawn from the labelled marks' sizes (w and h in screen
  pixels, together, ± `size_jitter`), so the size distribution is the labels' by
  construction; its label is the labelled box scaled alike (the user's own convention
  of where a box ends, not the alpha's extent);
- images are canvas-sized windows of the painted screens at their own scale: tiles at
  true scale, as `farm detect --tile` and the screens evaluation see the screens.

Image i depends only on (the screens set, the spec, seed, i), as in farm.datasets.synth.
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from farm.datasets.package.screens import size_quantiles
from farm.datasets.screens import Screens, open_screens
from farm.datasets.synth.render import yolo_line
from farm.datasets.synth.sheet import contact_sheet
from farm.datasets.tile import PAD_VALUE
from farm.errors import BadInput

#: px around a labelled box that is painted out too (antialiased edges, a soft shadow),
#: at least this much and at least RING_FRACTION of the box's longer side
RING_PX = 2
RING_FRACTION = 0.12
#: grey levels (largest channel) from which a pixel differs from the painted background
#: enough to belong to a mark template; full opacity at twice this
MATTE_LEVEL = 14
#: a fill still shows the mark when its pixels stay this close to the mark's (mean
#: absolute grey level difference under the box)
STILL_VISIBLE = 6.0
_CACHE = 6  # painted screens kept decoded per process


@dataclass
class ScreenSynthSpec:
    """What `synth --from-screens` may vary; the marks' sizes are not among them (they
    are the labels')."""

    canvas: tuple[int, int] = (416, 416)  # width, height of the images (the network's)
    marks: tuple[int, int] = (1, 3)       # marks per image
    negatives: float = 0.1                # fraction of images without a mark
    size_jitter: float = 0.05             # ± relative change of a drawn size
    templates: list[str] = field(default_factory=list)  # extra PNG templates with alpha
    brightness: float = 0.1               # ± fraction of full scale, whole image
    blur: float = 0.2                     # probability of a light Gaussian blur
    jpeg_quality: tuple[int, int] = (75, 95)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, *, path: str | None = None) -> "ScreenSynthSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown setting(s) for synthesis from screens: "
                           f"{', '.join(unknown)}", path=path,
                           hint=f"valid: {', '.join(sorted(known))} (mark sizes come from "
                                "the labels)")
        spec = cls(**{k: tuple(v) if isinstance(v, list) and k != "templates" else v
                      for k, v in data.items()})
        spec.check(path=path)
        return spec

    def check(self, *, path: str | None = None) -> None:
        w, h = self.canvas
        problems = [(w < 32 or h < 32, f"canvas {w}x{h} is too small", "e.g. 416x416"),
                    (not 0 <= self.marks[0] <= self.marks[1], f"marks {self.marks} is not a "
                     "range", "e.g. marks: [1, 3]"),
                    (not 0 <= self.negatives <= 1, "negatives is not a probability",
                     "a value in [0, 1]"),
                    (not 0 <= self.size_jitter < 0.5, "size_jitter must be in [0, 0.5)",
                     "e.g. 0.05: sizes within ±5 % of a labelled one"),
                    (not 0 <= self.blur <= 1, "blur is not a probability", "in [0, 1]"),
                    (not 0 <= self.brightness < 1, "brightness must be in [0, 1)", "e.g. 0.1"),
                    (not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100,
                     "jpeg_quality is not within 1-100", "e.g. [75, 95]")]
        for bad, reason, hint in problems:
            if bad:
                raise BadInput(reason, path=path, hint=hint)


# --------------------------------------------------------------------------- preparing

@dataclass(frozen=True)
class Template:
    """A mark to paste: BGRA pixels and where its labelled box sits in them."""

    path: str
    box: tuple[float, float, float, float]  # x0, y0, w, h in template pixels
    cls: int


@dataclass
class Prepared:
    """What every image draws from: painted screens, templates, the labels' sizes."""

    backgrounds: list[str]
    templates: list[Template]
    sizes: np.ndarray              # (N, 2): (w, h) of every labelled mark, screen pixels
    names: list[str]
    screens_id: str
    notes: list[str] = field(default_factory=list)  # boxes painted by inpainting, etc.


def prepare(screens: Screens, out: Path, templates: list[str] = ()) -> Prepared:
    """Paint out every screen's marks into out/backgrounds/, cut the marks into
    out/templates/ (BGRA PNG), and record both in out/screens-prepared.json."""
    (out / "backgrounds").mkdir(parents=True, exist_ok=True)
    (out / "templates").mkdir(parents=True, exist_ok=True)
    backgrounds, cut, notes = [], [], []
    for k, (image, boxes) in enumerate(screens.items()):
        original = cv2.imread(image, cv2.IMREAD_COLOR)
        painted, how = paint_out(original, [b[1:] for b in boxes])
        name = out / "backgrounds" / f"screen{k:04d}.png"
        cv2.imwrite(str(name), painted)
        backgrounds.append(str(name))
        for j, ((cls, *box), method) in enumerate(zip(boxes, how)):
            if method != "patch":
                notes.append(f"{image}: mark {j + 1} painted out by {method}")
            bgra, inner = cut_template(original, painted, box)
            path = out / "templates" / f"screen{k:04d}-{j}.png"
            cv2.imwrite(str(path), bgra)
            cut.append(Template(str(path), inner, cls))
    for path in templates:
        cut.append(_file_template(path))
    prepared = Prepared(backgrounds, cut, screens.mark_px, screens.names, screens.id, notes)
    if not len(prepared.sizes) or not prepared.templates:
        raise BadInput("the screens set holds no labelled mark to learn from",
                       path=screens.path, hint="label the × in the screenshots and package "
                                               "them again (`--kind screens`)")
    (out / "screens-prepared.json").write_text(json.dumps({
        "screens": screens.id, "backgrounds": backgrounds, "names": screens.names,
        "templates": [asdict(t) for t in cut], "sizes": prepared.sizes.tolist(),
        "notes": notes}, indent=1) + "\n")
    return prepared


def _file_template(path: str) -> Template:
    """A template file: a PNG whose alpha says what the mark is; its labelled box is its
    half-opaque pixels' extent (as farm.datasets.synth labels its marks)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInput("cannot read the template image", path=str(path),
                       hint="give a PNG with transparency")
    if img.ndim != 3 or img.shape[2] != 4 or img[:, :, 3].min() == 255:
        raise BadInput("the template has no transparency: the whole rectangle would be "
                       "pasted and labelled as the mark", path=str(path),
                       hint="save it as a PNG with an alpha channel")
    x, y, w, h = cv2.boundingRect((img[:, :, 3] >= 128).astype(np.uint8))
    if not w:
        raise BadInput("the template has no visible pixels", path=str(path),
                       hint="check its alpha channel")
    return Template(str(Path(path).resolve()), (float(x), float(y), float(w), float(h)), 0)


def load_prepared(out: Path) -> Prepared:
    d = json.loads((out / "screens-prepared.json").read_text())
    return Prepared(d["backgrounds"], [Template(t["path"], tuple(t["box"]), t["cls"])
                                       for t in d["templates"]],
                    np.array(d["sizes"], float).reshape(-1, 2), d["names"], d["screens"],
                    d["notes"])


def paint_out(image: np.ndarray, boxes: list[tuple[float, float, float, float]]
              ) -> tuple[np.ndarray, list[str]]:
    """The screenshot with every box (x0, y0, x1, y1) painted out, and how each was
    ("patch": the best matching patch beside it; "inpaint": OpenCV's Telea inpainting)."""
    h, w = image.shape[:2]
    regions = [_region(b, w, h) for b in boxes]
    blocked = np.zeros((h, w), np.uint8)
    for x0, y0, x1, y1 in regions:
        blocked[y0:y1, x0:x1] = 1
    out = image.copy()
    how = []
    for (x0, y0, x1, y1), box in zip(regions, boxes):
        patch = _best_patch(out, blocked, (x0, y0, x1, y1))
        method = "patch"
        if patch is not None:
            _feather_in(out, patch, (x0, y0, x1, y1))
        if patch is None or _still_visible(image, out, box):
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 255
            radius = max(3, (max(x1 - x0, y1 - y0)) // 4)
            out = cv2.inpaint(out, mask, radius, cv2.INPAINT_TELEA)
            method = "inpaint"
        blocked[y0:y1, x0:x1] = 0  # painted: a clean source for its neighbours now
        how.append(method)
    return out, how


def _region(box, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    ring = max(RING_PX, math.ceil(RING_FRACTION * max(x1 - x0, y1 - y0)))
    return (max(0, math.floor(x0) - ring), max(0, math.floor(y0) - ring),
            min(w, math.ceil(x1) + ring), min(h, math.ceil(y1) + ring))


def _best_patch(image: np.ndarray, blocked: np.ndarray, region) -> np.ndarray | None:
    """The same-size patch beside the region (left, right, above, below; one and two
    widths away) with no labelled mark in it whose border best continues the region's
    border; None when every candidate leaves the screen or touches a mark."""
    x0, y0, x1, y1 = region
    rw, rh = x1 - x0, y1 - y0
    h, w = image.shape[:2]
    ring = _ring(image, region)
    best, best_cost = None, float("inf")
    for k in (1, 2):
        for dx, dy in ((-k * rw, 0), (k * rw, 0), (0, -k * rh), (0, k * rh)):
            cx0, cy0 = x0 + dx, y0 + dy
            if cx0 < 0 or cy0 < 0 or cx0 + rw > w or cy0 + rh > h:
                continue
            if blocked[cy0:cy0 + rh, cx0:cx0 + rw].any():
                continue
            candidate = (cx0, cy0, cx0 + rw, cy0 + rh)
            cost = float(np.mean(np.abs(_ring(image, candidate) - ring)))
            if cost < best_cost:
                best, best_cost = candidate, cost
    if best is None:
        return None
    bx0, by0, bx1, by1 = best
    return image[by0:by1, bx0:bx1].copy()


def _ring(image: np.ndarray, region) -> np.ndarray:
    """The region's outermost two pixels, as a flat float array (its border)."""
    x0, y0, x1, y1 = region
    crop = image[y0:y1, x0:x1].astype(np.float32)
    t = min(2, crop.shape[0] // 2, crop.shape[1] // 2)
    return np.concatenate([crop[:t].ravel(), crop[-t:].ravel(), crop[:, :t].ravel(),
                           crop[:, -t:].ravel()])


def _feather_in(out: np.ndarray, patch: np.ndarray, region) -> None:
    """Copy the patch over the region, blended over its outer ring so no seam shows."""
    x0, y0, x1, y1 = region
    rh, rw = patch.shape[:2]
    t = max(1, min(rw, rh) // 6)
    weight = np.ones((rh, rw), np.float32)
    for k in range(t):
        v = (k + 1) / (t + 1)
        weight[k, :] = np.minimum(weight[k, :], v)
        weight[-1 - k, :] = np.minimum(weight[-1 - k, :], v)
        weight[:, k] = np.minimum(weight[:, k], v)
        weight[:, -1 - k] = np.minimum(weight[:, -1 - k], v)
    roi = out[y0:y1, x0:x1].astype(np.float32)
    blend = patch.astype(np.float32) * weight[:, :, None] + roi * (1 - weight[:, :, None])
    out[y0:y1, x0:x1] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def _still_visible(original: np.ndarray, painted: np.ndarray, box) -> bool:
    """Whether the painted box still shows the mark: its pixels barely changed."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    a = original[y0:y1, x0:x1].astype(np.int16)
    b = painted[y0:y1, x0:x1].astype(np.int16)
    return a.size == 0 or float(np.mean(np.abs(a - b))) < STILL_VISIBLE


def cut_template(original: np.ndarray, painted: np.ndarray, box
                 ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A labelled mark as BGRA: the box and a margin of the original, opaque where it
    differs from the painted background; and the labelled box inside it (x0, y0, w, h)."""
    h, w = original.shape[:2]
    x0, y0, x1, y1 = box
    m = max(RING_PX, math.ceil(RING_FRACTION * max(x1 - x0, y1 - y0)))
    cx0, cy0 = max(0, math.floor(x0) - m), max(0, math.floor(y0) - m)
    cx1, cy1 = min(w, math.ceil(x1) + m), min(h, math.ceil(y1) + m)
    crop = original[cy0:cy1, cx0:cx1]
    diff = np.abs(crop.astype(np.int16) - painted[cy0:cy1, cx0:cx1].astype(np.int16)).max(axis=2)
    alpha = np.clip((diff - MATTE_LEVEL) * 255.0 / MATTE_LEVEL, 0, 255).astype(np.uint8)
    alpha = cv2.morphologyEx(alpha, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    inside = np.zeros_like(alpha)  # the mark is what the user boxed (and its soft edge)
    inside[max(0, math.floor(y0) - cy0 - 1):math.ceil(y1) - cy0 + 1,
           max(0, math.floor(x0) - cx0 - 1):math.ceil(x1) - cx0 + 1] = 255
    alpha = np.minimum(alpha, inside)
    return np.dstack([crop, alpha]), (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)


# --------------------------------------------------------------------------- drawing

def synthesize_from_screens(screens: str | os.PathLike | Screens, out_dir: str | os.PathLike,
                            n: int, seed: int, spec: ScreenSynthSpec | None = None, *,
                            start: int = 0, count: int | None = None, prepared: bool = False,
                            on_progress: Callable[[int], None] | None = None) -> Prepared:
    """Write images start..start+count-1 of an n-image set into out_dir/images + labels
    (and obj.names, synth.json). `prepared`: out_dir holds prepare()'s output already
    (the parallel workers of `farm dataset synth --workers N`)."""
    spec = spec or ScreenSynthSpec()
    spec.check()
    out = Path(out_dir)
    if prepared:
        prep = load_prepared(out)
    else:
        s = screens if isinstance(screens, Screens) else open_screens(screens)
        prep = prepare(s, out, spec.templates)
    count = n - start if count is None else count
    if not (0 <= start and count >= 0 and start + count <= n) or seed < 0:
        raise BadInput(f"chunk {start}..{start + count} is outside 0..{n} (seed {seed})",
                       hint="give 0 <= start, start + count <= n and a seed >= 0")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "obj.names").write_text("".join(f"{c}\n" for c in prep.names))
    (out / "synth.json").write_text(json.dumps({
        "from_screens": prep.screens_id, "spec": spec.to_dict(), "seed": seed, "n": n,
        "measured": size_report(prep.sizes)}, indent=1, sort_keys=True) + "\n")
    width = max(6, len(str(n - 1)))
    drawer = _Drawer(prep, spec)
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        canvas, boxes = drawer.render(rng)
        quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        _, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
        name = f"{i:0{width}d}"
        (out / "images" / f"{name}.jpg").write_bytes(jpg.tobytes())
        th, tw = canvas.shape[:2]
        (out / "labels" / f"{name}.txt").write_text(
            "".join(yolo_line(c, x0, y0, x1, y1, tw, th) for c, x0, y0, x1, y1 in boxes))
        if on_progress:
            on_progress(1)
    return prep


class _Drawer:
    def __init__(self, prep: Prepared, spec: ScreenSynthSpec):
        self.prep, self.spec = prep, spec
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self, path: str, flags=cv2.IMREAD_COLOR) -> np.ndarray:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        img = cv2.imread(path, flags)
        if img is None:
            raise BadInput("cannot read a prepared image", path=path,
                           hint="synthesize again into a new folder")
        self.cache[path] = img
        while len(self.cache) > _CACHE + len(self.prep.templates):
            self.cache.popitem(last=False)
        return img

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple]]:
        spec, prep = self.spec, self.prep
        tw, th = spec.canvas
        screen = self._load(prep.backgrounds[int(rng.integers(len(prep.backgrounds)))])
        h, w = screen.shape[:2]
        if w < tw or h < th:
            screen = cv2.copyMakeBorder(screen, 0, max(0, th - h), 0, max(0, tw - w),
                                        cv2.BORDER_CONSTANT, value=PAD_VALUE)
            h, w = screen.shape[:2]
        x, y = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
        canvas = screen[y:y + th, x:x + tw].copy()
        boxes: list[tuple] = []
        if rng.random() >= spec.negatives:
            for _ in range(int(rng.integers(spec.marks[0], spec.marks[1] + 1))):
                placed = self._paste(rng, canvas, boxes)
                if placed:
                    boxes.append(placed)
        if spec.brightness:
            shift = int(round(rng.uniform(-spec.brightness, spec.brightness) * 255))
            canvas = np.clip(canvas.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        if rng.random() < spec.blur:
            canvas = cv2.GaussianBlur(canvas, (3, 3), 0)
        return canvas, boxes

    def _paste(self, rng, canvas: np.ndarray, boxes: list[tuple]) -> tuple | None:
        """One mark at a labelled size, where it fits whole and apart from the others;
        its label box (class, x0, y0, x1, y1), or None when it found no room."""
        prep, spec = self.prep, self.spec
        t = prep.templates[int(rng.integers(len(prep.templates)))]
        tw0, th0 = prep.sizes[int(rng.integers(len(prep.sizes)))]
        k = 1 + rng.uniform(-spec.size_jitter, spec.size_jitter)
        bw, bh = max(2.0, tw0 * k), max(2.0, th0 * k)
        sx, sy = bw / t.box[2], bh / t.box[3]
        src = self._load(t.path, cv2.IMREAD_UNCHANGED)
        if src.ndim == 2 or src.shape[2] != 4:
            return None
        size = (max(1, round(src.shape[1] * sx)), max(1, round(src.shape[0] * sy)))
        shrink = sx < 1 and sy < 1
        patch = cv2.resize(src, size, interpolation=cv2.INTER_AREA if shrink
                           else cv2.INTER_LINEAR)
        ox, oy = t.box[0] * sx, t.box[1] * sy  # the label box's corner inside the patch
        ch, cw = canvas.shape[:2]
        for _ in range(30):
            x0 = rng.uniform(1, cw - bw - 1) if cw - bw > 2 else None
            y0 = rng.uniform(1, ch - bh - 1) if ch - bh > 2 else None
            if x0 is None or y0 is None:
                return None
            if all(x0 + bw + 2 <= a or c + 2 <= x0 or y0 + bh + 2 <= b or d + 2 <= y0
                   for _, a, b, c, d in boxes):
                break
        else:
            return None
        px, py = int(round(x0 - ox)), int(round(y0 - oy))
        _blend(canvas, patch, px, py)
        return (t.cls, px + ox, py + oy, px + ox + bw, py + oy + bh)


def _blend(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a BGRA patch onto the canvas at (x, y), clipped to the canvas."""
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if x1 <= x0 or y1 <= y0:
        return
    p = patch[y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float32)
    a = p[:, :, 3:4] / 255.0
    roi = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(p[:, :, :3] * a + roi * (1 - a) + 0.5, 0, 255
                                   ).astype(np.uint8)


# --------------------------------------------------------------------------- report

def size_report(sizes: np.ndarray) -> dict:
    """The mark size distribution (screen pixels) as the manifest and caption give it."""
    sizes = np.asarray(sizes, float).reshape(-1, 2)
    aspect = sizes[:, 0] / np.maximum(sizes[:, 1], 1e-9)
    return {"marks": len(sizes), "long_side_px": size_quantiles(sizes.max(axis=1)),
            "w_over_h": size_quantiles(aspect)}


def label_sizes(out_dir: str | os.PathLike) -> np.ndarray:
    """(w, h) in pixels of every box the synthesized labels hold."""
    out = Path(out_dir)
    sizes = []
    for label in sorted((out / "labels").glob("*.txt")):
        image = out / "images" / f"{label.stem}.jpg"
        shape = cv2.imread(str(image), cv2.IMREAD_REDUCED_GRAYSCALE_2)
        h, w = (shape.shape[0] * 2, shape.shape[1] * 2) if shape is not None else (0, 0)
        for line in label.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                sizes.append((float(parts[3]) * w, float(parts[4]) * h))
    return np.array(sizes, float).reshape(-1, 2)


def caption_sheet(png: str | os.PathLike, lines: list[str]) -> None:
    """Put caption lines above a contact sheet (rewritten in place)."""
    sheet = cv2.imread(str(png), cv2.IMREAD_COLOR)
    row = 22
    band = np.full((row * len(lines) + 10, sheet.shape[1], 3), 24, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(band, line, (8, row * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (235, 235, 235), 1, cv2.LINE_AA)
    cv2.imwrite(str(png), np.vstack([band, sheet]))


def sheet_caption(prep: Prepared, made: np.ndarray, n: int, canvas: tuple[int, int]) -> list[str]:
    """The caption: the labels' size distribution, and what the images carry."""
    measured, drawn = size_report(prep.sizes), size_report(made)

    def q(r: dict) -> str:
        s = r["long_side_px"]
        return ("-" if not s else f"min {s['min']:g} / p10 {s['p10']:g} / median "
                f"{s['median']:g} / p90 {s['p90']:g} / max {s['max']:g} px")
    return [f"from screens set {prep.screens_id}: {len(prep.backgrounds)} screens painted out, "
            f"{measured['marks']} labelled marks; long side {q(measured)}",
            f"{n} images {canvas[0]}x{canvas[1]} at true scale: {drawn['marks']} marks pasted, "
            f"long side {q(drawn)}"]


def write_sheet(out_dir: str | os.PathLike, prep: Prepared, n: int,
                canvas: tuple[int, int]) -> Path:
    """contact_sheet.png of the first images, captioned with the size distributions."""
    out = Path(out_dir)
    width = max(6, len(str(n - 1)))
    names = [f"{i:0{width}d}" for i in range(min(n, 48))]
    sheet = out / "contact_sheet.png"
    contact_sheet([(out / "images" / f"{s}.jpg", out / "labels" / f"{s}.txt")
                   for s in names], sheet)
    caption_sheet(sheet, sheet_caption(prep, label_sizes(out), n, canvas))
    return sheet
