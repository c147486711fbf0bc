"""Synthetic training images: marks pasted at true scale, labels from what was pasted.

Why this exists (seed notes): in ds3 a 32×32 crop of the "×" was labelled as the whole
image, darknet stretched it to 416×416 and the detector only knew giant marks; in ds7 a
rotation with "nearest" fill smeared the mark into something else. Here a mark is resized
to a pixel size on a full-size canvas, transformed with transparent (constant) borders,
and its label is the tight box of the alpha that is still visible after clipping and
occlusion. Every image has its own random generator seeded from (seed, index), so the
output is byte-identical however the work is split over processes or hosts.
"""
from __future__ import annotations

import functools
import json
import math
import os
import random
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import cv2
import numpy as np

from farm.errors import BadInput

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CANVAS_PRESETS = {"tile": (416, 416), "screen": (1080, 2400)}
PROCEDURAL_STYLES = ("circle", "ring", "square", "plain")
VISIBLE_ALPHA = 128  # a pixel counts as part of the mark from half opacity up


@dataclass
class SynthSpec:
    """Everything that decides what synthesis draws; JSON-friendly (see to_dict/from_dict).

    Sizes are pixels on the canvas (true scale): `mark_px` is the longer side of the mark
    before rotation. Probabilities are in [0, 1]; "±" ranges are symmetric around zero.
    """

    templates: list[str] = field(default_factory=list)  # PNGs with alpha (or colour_key)
    colour_key: tuple[int, int, int] | None = None  # RGB of a template's flat background
    key_tolerance: int = 40  # colour distance still counted as background
    procedural: str = "mixed"  # when no templates: circle | ring | square | plain | mixed
    backgrounds: list[str] = field(default_factory=list)  # files or folders; none: generated UI
    canvas: tuple[int, int] = (416, 416)  # width, height
    mark_px: tuple[float, float] = (24, 48)
    marks: tuple[int, int] = (1, 3)  # marks per image (non-negative images)
    negatives: float = 0.1  # fraction of images with no mark at all
    rotation: float = 10.0  # ± degrees
    aspect: float = 0.1  # ± relative stretch of width against height
    shear: float = 0.05  # ± shear factor
    flip: str = "hv"  # "", "h", "v" or "hv": mirrorings the mark allows ("×" allows both)
    brightness: float = 0.15  # ± fraction of full scale: whole image on file backgrounds,
    contrast: float = 0.2  # ± relative      the marks' colours on generated canvases
    hue: float = 10.0  # ± degrees, marks only
    blur: float = 0.3  # probability of a light Gaussian blur
    noise: float = 0.3  # probability of additive noise
    noise_level: int = 8  # ± grey levels of that noise
    jpeg_quality: tuple[int, int] = (70, 95)
    occlusion: float = 0.15  # probability that a panel partly covers a mark
    distractors: tuple[int, int] = (0, 3)  # plus signs, circles, ticks, ... per image
    min_visible: float = 0.5  # label a mark only when this much of it is visible
    class_names: list[str] = field(default_factory=lambda: ["close"])
    template_classes: list[int] | None = None  # class of each template (default 0)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, *, path: str | None = None) -> "SynthSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown synthesis setting(s): {', '.join(unknown)}", path=path,
                           hint=f"valid settings: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) and k not in _LIST_FIELDS else v
                  for k, v in data.items()}
        spec = cls(**values)
        try:
            spec.check(path=path)
        except (TypeError, ValueError) as e:
            raise BadInput(f"a synthesis setting has the wrong type: {e}", path=path,
                           hint="numbers for sizes and probabilities, [low, high] for ranges"
                           ) from None
        return spec

    def check(self, *, path: str | None = None) -> None:
        """Refuse settings that would make wrong data silently."""
        def bad(reason: str, hint: str) -> None:
            raise BadInput(reason, path=path, hint=hint)

        w, h = self.canvas
        if w < 32 or h < 32:
            bad(f"canvas {w}x{h} is too small", "use at least 32x32, e.g. 416x416 or 1080x2400")
        lo, hi = self.mark_px
        if not 4 <= lo <= hi:
            bad(f"mark_px {lo}-{hi} is not a range of at least 4 px", "e.g. mark_px: [24, 48]")
        if hi * (1 + self.aspect) > min(w, h):
            bad(f"marks of up to {hi} px do not fit on a {w}x{h} canvas",
                "lower mark_px or use a larger canvas")
        for name in ("negatives", "blur", "noise", "occlusion", "min_visible"):
            if not 0 <= getattr(self, name) <= 1:
                bad(f"{name}={getattr(self, name)} is not a probability", "use a value in [0, 1]")
        for name in ("marks", "distractors"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                bad(f"{name}={a}-{b} is not a range", f"e.g. {name}: [1, 3]")
        q_lo, q_hi = self.jpeg_quality
        if not 1 <= q_lo <= q_hi <= 100:
            bad(f"jpeg_quality {q_lo}-{q_hi} is not within 1-100", "e.g. jpeg_quality: [70, 95]")
        if not 0 <= self.rotation < 90 or not 0 <= self.aspect < 1 or not 0 <= self.shear < 1:
            bad("rotation must be in [0, 90) degrees, aspect and shear in [0, 1)",
                "small values keep the mark recognisable (ds7: over-transformed marks hurt)")
        if set(self.flip) - {"h", "v"}:
            bad(f"flip={self.flip!r} is not one of '', 'h', 'v', 'hv'",
                "use 'hv' for a symmetric ×")
        if self.procedural not in PROCEDURAL_STYLES + ("mixed",):
            bad(f"procedural={self.procedural!r} is unknown",
                f"use one of {', '.join(PROCEDURAL_STYLES)} or mixed")
        if not self.class_names:
            bad("class_names is empty", "name at least one class, e.g. [close]")
        if self.template_classes is not None:
            if len(self.template_classes) != len(self.templates):
                bad("template_classes needs one class id per template",
                    "list as many ids as templates, or leave it out for class 0")
            if any(not 0 <= c < len(self.class_names) for c in self.template_classes):
                bad("a template class id is outside class_names", "use ids 0..classes-1")


_LIST_FIELDS = {"templates", "backgrounds", "class_names", "template_classes"}


@dataclass(frozen=True)
class SampleRecord:
    """One written image: where, its size, and the boxes its label file holds.

    Boxes are (class, x0, y0, x1, y1) in canvas pixels, x1/y1 exclusive.
    """

    index: int
    image: str
    label: str
    width: int
    height: int
    boxes: tuple[tuple[int, int, int, int, int], ...]


# --------------------------------------------------------------------------- public API

def synthesize(spec: SynthSpec, out_dir: str | os.PathLike, n: int, seed: int, start: int = 0,
               count: int | None = None, *,
               on_progress: Callable[[int], None] | None = None) -> list[SampleRecord]:
    """Write images start..start+count-1 of an n-image set to out_dir/images and /labels.

    Image i depends only on (spec, seed, i), never on which call or process makes it.
    """
    spec.check()
    count = n - start if count is None else count
    if not (0 <= start and count >= 0 and start + count <= n) or seed < 0:
        raise BadInput(f"chunk {start}..{start + count} is outside 0..{n} (seed {seed})",
                       hint="give 0 <= start, start + count <= n and a seed >= 0")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    _write_once(out / "obj.names", "".join(f"{c}\n" for c in spec.class_names))
    _write_once(out / "synth.json", json.dumps(  # the same from every chunk
        {"spec": spec.to_dict(), "seed": seed}, indent=1, sort_keys=True) + "\n")
    assets = _assets(spec)
    width = max(6, len(str(n - 1)))
    records = []
    for i in range(start, start + count):
        records.append(_write_sample(spec, assets, str(out), i, seed, width))
        if on_progress:
            on_progress(1)
    return records


def render(spec: SynthSpec, index: int, seed: int, out: np.ndarray | None = None
           ) -> tuple[np.ndarray, list[tuple]]:
    """Draw one image in memory: (BGR canvas, [(class, x0, y0, x1, y1), ...]).

    `out`, a C-contiguous (height, width, 3) uint8 array, is drawn over and returned as the
    canvas instead of a new one: synthesize reuses one per thread, because fresh
    half-megabyte arrays cost page faults worth a fifth of the render time.
    """
    w, h = spec.canvas
    if out is not None and (out.shape != (h, w, 3) or out.dtype != np.uint8
                            or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous ({h}, {w}, 3) uint8 array")
    return _render(spec, _assets(spec), _Rand.of(seed, index), out)


def make_close_mark(size: int = 64, style: str = "circle", fg=(255, 255, 255),
                    bg=(60, 60, 60), thickness: float = 0.14) -> np.ndarray:
    """A "×" close mark as BGRA (straight alpha), antialiased; RGB colours.

    Its half-opaque pixels (what a label would box) span `size` px; the soft edge adds one.

    So that a demo or test needs no template files.
    """
    if style not in PROCEDURAL_STYLES:
        raise BadInput(f"unknown close-mark style {style!r}",
                       hint=f"use one of {', '.join(PROCEDURAL_STYLES)}")
    levels, core = _masks(style, float(thickness))
    k = size / max(core)
    fg, bg = tuple(fg)[::-1], tuple(bg)[::-1]
    masks = _warp(levels, k, k, 0.0, 0.0)
    colour = _paint(masks, fg, fg if style in ("ring", "plain") else bg).colour
    return _unpremultiply(_tight(np.dstack([colour, masks[:, :, 0]]))[0])


def contact_sheet(image_label_pairs: Iterable[tuple[str, str]], out_png: str | os.PathLike,
                  cols: int = 8, thumb: int = 192) -> tuple[int, int]:
    """Thumbnails with their YOLO boxes drawn, to look at before training (ds7's lesson).

    Returns the sheet's (width, height): cols*thumb wide, one thumb per row.
    """
    pairs = list(image_label_pairs)
    if not pairs:
        raise BadInput("no images for the contact sheet", path=str(out_png),
                       hint="synthesize at least one image first")
    rows = math.ceil(len(pairs) / cols)
    sheet = np.full((rows * thumb, cols * thumb, 3), 32, np.uint8)
    for k, (image, label) in enumerate(pairs):
        cell = _thumbnail(image, label, thumb)
        r, c = divmod(k, cols)
        sheet[r * thumb:r * thumb + cell.shape[0], c * thumb:c * thumb + cell.shape[1]] = cell
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise BadInput("could not write the contact sheet", path=str(out),
                       hint="check that the folder is writable and the name ends in .png")
    return sheet.shape[1], sheet.shape[0]


# --------------------------------------------------------------------------- writing

def _write_sample(spec, assets, out: str, i: int, seed: int, width: int) -> SampleRecord:
    r = _Rand.of(seed, i)
    w, h = spec.canvas
    canvas, boxes = _render(spec, assets, r, _scratch("canvas", (h, w, 3)))
    quality = r.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)
    _, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    name = f"{i:0{width}d}"
    image, label = f"{out}/images/{name}.jpg", f"{out}/labels/{name}.txt"
    with open(image, "wb") as f:
        f.write(jpg)
    h, w = canvas.shape[:2]
    with open(label, "w") as f:
        f.write("".join(yolo_line(c, x0, y0, x1, y1, w, h) for c, x0, y0, x1, y1 in boxes))
    return SampleRecord(i, image, label, w, h, tuple(boxes))


def yolo_line(cls: int, x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> str:
    """A YOLO label line whose box lies strictly inside (0, 1) after 6-decimal rounding.

    Computed in millionths so that x ± w/2 read back from the text never leaves the image.
    """
    def axis(a: float, b: float, size: int) -> tuple[int, int]:
        lo = max(1, math.ceil(a / size * 1e6 - 1e-6))
        hi = min(999_999, math.floor(b / size * 1e6 + 1e-6))
        if (lo + hi) % 2:
            hi -= 1
        return (lo + hi) // 2, hi - lo

    cx, bw = axis(x0, x1, w)
    cy, bh = axis(y0, y1, h)
    return f"{cls} {cx / 1e6:.6f} {cy / 1e6:.6f} {bw / 1e6:.6f} {bh / 1e6:.6f}\n"


_LOCAL = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A work image kept per thread and reused (see render's `out`)."""
    pool = _LOCAL.__dict__.setdefault("scratch", {})
    img = pool.get(name)
    if img is None or img.shape != shape:
        img = pool[name] = np.empty(shape, np.uint8)
    return img


def _write_once(path: Path, text: str) -> None:
    """Write a shared file atomically; concurrent chunks write identical content."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- assets

@dataclass
class _Assets:
    templates: list[tuple[list[np.ndarray], tuple[int, int]]]  # BGRA pyramid, core (w, h)
    backgrounds: list[str]


_ASSET_CACHE: dict = {}
_BG_CACHE: OrderedDict = OrderedDict()
_BG_CACHE_SIZE = 12


def load_assets(spec: SynthSpec) -> _Assets:
    """Templates and background list of a spec (cached per process); bad ones raise here."""
    spec.check()
    return _assets(spec)


def _assets(spec: SynthSpec) -> _Assets:
    key = (tuple(spec.templates), spec.colour_key and tuple(spec.colour_key), spec.key_tolerance,
           tuple(spec.backgrounds))
    if key not in _ASSET_CACHE:
        _ASSET_CACHE.clear()
        _ASSET_CACHE[key] = _Assets(
            [_pyramid_of(load_template(p, spec.colour_key, spec.key_tolerance))
             for p in spec.templates],
            _background_files(spec.backgrounds))
    return _ASSET_CACHE[key]


def load_template(path: str, colour_key=None, tolerance: int = 40):
    """Read a mark template as premultiplied BGRA cropped to its pixels, with its core size.

    A template needs transparency: without it the whole rectangle would be pasted and
    labelled, the ds3 mistake in another form.
    """
    if not Path(path).is_file():
        raise BadInput("template file does not exist", path=str(path), hint="check the path")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInput("cannot read the template image", path=str(path),
                       hint="give a PNG (with transparency) or JPEG file that opens in a viewer")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    bgr = np.ascontiguousarray(img[:, :, :3])
    if img.shape[2] == 4 and img[:, :, 3].min() < 255:
        alpha = img[:, :, 3]
    elif colour_key is not None:
        alpha = _key_alpha(bgr, colour_key, tolerance)
    else:
        raise BadInput("the template has no transparency and no colour key was given, so the "
                       "whole rectangle would be pasted and labelled as the mark", path=str(path),
                       hint="save it as a PNG with an alpha channel, or pass a colour key "
                            "(--colour-key 255,255,255 for a white background)")
    pm, core = _tight(_premultiply(bgr, alpha))
    if core is None:
        raise BadInput("the template has no visible pixels after transparency/colour key",
                       path=str(path), hint="check the alpha channel or widen --key-tolerance")
    return pm, core


def _key_alpha(bgr: np.ndarray, rgb_key, tolerance: int) -> np.ndarray:
    key = np.array(list(rgb_key)[::-1], np.float32)
    dist = np.linalg.norm(bgr.astype(np.float32) - key, axis=2)
    ramp = np.clip((dist - tolerance) / max(tolerance, 1), 0, 1)
    return (ramp * 255 + 0.5).astype(np.uint8)


def _background_files(entries: Sequence[str]) -> list[str]:
    files: list[str] = []
    for entry in entries:
        p = Path(entry)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise BadInput("the background folder holds no images", path=str(p),
                               hint=f"put {', '.join(IMAGE_EXTS)} files in it, or give no "
                                    "backgrounds to use generated UI-like canvases")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            raise BadInput("background file or folder does not exist", path=str(p),
                           hint="check the path")
    return files


def _load_background(path: str) -> np.ndarray:
    if path in _BG_CACHE:
        _BG_CACHE.move_to_end(path)
        return _BG_CACHE[path]
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise BadInput("cannot read the background image", path=path,
                       hint="remove it from the background folder or re-export it")
    _BG_CACHE[path] = img
    if len(_BG_CACHE) > _BG_CACHE_SIZE:
        _BG_CACHE.popitem(last=False)
    return img


# --------------------------------------------------------------------------- rendering

class _Rand(random.Random):
    """The draws of one image. Python's Mersenne Twister: seeding it costs a quarter of
    creating a numpy Generator, and each of the ~80 small draws is one C call."""

    @classmethod
    def of(cls, seed: int, index: int) -> "_Rand":
        """Image `index` of a seed's set: its draws depend on nothing else."""
        return cls(seed << 64 | index)

    def integers(self, lo: int, hi: int) -> int:
        """An int in [lo, hi) like numpy's; lo when the range is empty."""
        return lo + int(self.random() * (hi - lo)) if hi > lo else lo

    def colour(self, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
        """Three channels from one draw (24 random bits)."""
        v, span = int(self.random() * 16777216), hi - lo
        return (lo + ((v & 255) * span >> 8), lo + ((v >> 8 & 255) * span >> 8),
                lo + ((v >> 16) * span >> 8))


@dataclass(slots=True)
class _Pasted:
    x: int
    y: int
    core: np.ndarray  # uint8 0/255 mask of the mark's visible-alpha pixels (patch coordinates)
    visible: np.ndarray  # same, minus what is occluded (core itself until something is)
    cls: int


def _render(spec: SynthSpec, assets: _Assets, r: _Rand, out: np.ndarray | None = None):
    w, h = spec.canvas
    tone = _Tone(1 + r.uniform(-spec.contrast, spec.contrast),
                 r.uniform(-spec.brightness, spec.brightness) * 255)
    canvas = np.empty((h, w, 3), np.uint8) if out is None else out
    _background(r, assets, canvas)
    if assets.backgrounds:  # generated canvases have random colours: tone the marks only
        tone.apply_lut(canvas)
    for _ in range(r.integers(spec.distractors[0], spec.distractors[1] + 1)):
        _draw_distractor(r, canvas, spec.mark_px)
    pasted: list[_Pasted] = []
    negative = r.random() < spec.negatives
    for _ in range(0 if negative else r.integers(spec.marks[0], spec.marks[1] + 1)):
        patch, cls = _mark(r, spec, assets, tone)
        spot = _free_spot(r, patch.core.shape, pasted, w, h)
        if spot is None:
            continue
        _composite(canvas, patch, *spot)
        pasted.append(_Pasted(spot[0], spot[1], patch.core, patch.core, cls))
        if r.random() < spec.occlusion:
            _occlude(r, canvas, pasted[-1], pasted)
    _photometric(r, spec, canvas)
    return canvas, _boxes(pasted, w, h, spec.min_visible)


def _boxes(pasted: list[_Pasted], w: int, h: int, min_visible: float) -> list[tuple]:
    """Tight boxes of what is visible inside the canvas; mostly hidden marks get no label."""
    boxes = []
    for p in pasted:
        ph, pw = p.core.shape
        x0, y0, x1, y1 = max(p.x, 0), max(p.y, 0), min(p.x + pw, w), min(p.y + ph, h)
        if x1 <= x0 or y1 <= y0:
            continue
        vis = p.visible[y0 - p.y:y1 - p.y, x0 - p.x:x1 - p.x]
        if p.visible is not p.core or vis.shape != p.core.shape:  # occluded, or cut off
            total = cv2.countNonZero(p.core)
            if total == 0 or cv2.countNonZero(vis) < min_visible * total:
                continue
        bx, by, bw, bh = cv2.boundingRect(vis)
        if bw == 0:  # no pixel reaches VISIBLE_ALPHA
            continue
        boxes.append((p.cls, x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh))
    return boxes


def _free_spot(r: _Rand, shape, pasted: list[_Pasted], w: int, h: int, tries: int = 20):
    """A top-left corner that keeps the mark mostly on the canvas and off other marks."""
    ph, pw = shape[:2]
    for _ in range(tries):
        x = r.integers(-(pw // 4), w - pw + pw // 4 + 1)
        y = r.integers(-(ph // 4), h - ph + ph // 4 + 1)
        if all(x + pw + 2 <= p.x or p.x + p.core.shape[1] + 2 <= x or
               y + ph + 2 <= p.y or p.y + p.core.shape[0] + 2 <= y for p in pasted):
            return x, y
    return None


class _Patch(NamedTuple):
    """A mark ready to paste: premultiplied BGR, the share of the background it keeps
    (255 − alpha, three channels) and its core (alpha ≥ VISIBLE_ALPHA, 0/255). Both blend
    operands come ready-made from one cv2.transform each, so a paste is two saturating
    OpenCV calls and no conversions."""

    colour: np.ndarray
    keep: np.ndarray
    core: np.ndarray


def _composite(canvas: np.ndarray, patch: _Patch, x: int, y: int) -> None:
    """Alpha-blend a patch onto the canvas in place, clipped to its edges."""
    h, w = canvas.shape[:2]
    ph, pw = patch.core.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if x1 <= x0 or y1 <= y0:
        return
    inside = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    roi = canvas[y0:y1, x0:x1]
    cv2.multiply(roi, patch.keep[inside], dst=roi, scale=1 / 255)
    cv2.add(roi, patch.colour[inside], dst=roi)


def _occlude(r: _Rand, canvas: np.ndarray, target: _Pasted, pasted: list[_Pasted]) -> None:
    """Cover one side of a mark with a UI panel, and record what it hides."""
    ph, pw = target.core.shape
    frac = r.uniform(0.2, 0.7)
    side = r.integers(0, 4)
    reach = r.integers(pw, 4 * pw + 1)
    x0, y0, x1, y1 = target.x, target.y, target.x + pw, target.y + ph
    if side == 0:
        x0, x1 = x1 - int(frac * pw), x1 + reach
    elif side == 1:
        x0, x1 = x0 - reach, x0 + int(frac * pw)
    elif side == 2:
        y0, y1 = y1 - int(frac * ph), y1 + reach
    else:
        y0, y1 = y0 - reach, y0 + int(frac * ph)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), r.colour(), -1)
    for p in pasted:
        qh, qw = p.core.shape
        ax0, ay0 = max(x0 - p.x, 0), max(y0 - p.y, 0)
        ax1, ay1 = min(x1 - p.x, qw), min(y1 - p.y, qh)
        if ax1 > ax0 and ay1 > ay0:
            if p.visible is p.core:
                p.visible = p.core.copy()
            p.visible[ay0:ay1, ax0:ax1] = 0


class _Tone:
    """Contrast (about mid-grey) and brightness of one image: v -> gain * v + offset.

    A whole-image lookup table cost a fifth of the time budget; on generated canvases it
    is applied to the marks' colours instead, which is the same where it matters.
    """

    __slots__ = ("contrast", "offset")

    def __init__(self, contrast: float, brightness: float):
        self.contrast = contrast
        self.offset = 128 * (1 - contrast) + brightness

    def colour(self, bgr) -> tuple[int, int, int]:
        g, o = self.contrast, self.offset + 0.5
        b, gr, r = bgr
        return (min(255, max(0, int(b * g + o))), min(255, max(0, int(gr * g + o))),
                min(255, max(0, int(r * g + o))))

    def apply_lut(self, img: np.ndarray) -> None:
        lut = np.clip(np.arange(256) * self.contrast + self.offset + 0.5, 0, 255).astype(np.uint8)
        flat = img.reshape(img.shape[0], -1)  # one-channel view: cv2.LUT is faster on it
        cv2.LUT(flat, lut, dst=flat)

    def premultiplied(self) -> np.ndarray:
        """cv2.transform matrix from premultiplied BGRA to toned premultiplied BGR:
        v' = gain*v + offset on straight colour is gain*pm + offset*alpha premultiplied."""
        m = np.zeros((3, 4), np.float32)
        m[:, :3] = np.eye(3) * self.contrast
        m[:, 3] = self.offset / 255
        return m


def _photometric(r: _Rand, spec: SynthSpec, canvas: np.ndarray) -> None:
    """Whole-image blur and noise, in place."""
    h, w = canvas.shape[:2]
    if r.random() < spec.blur:  # sigma 0: the fixed-point fast path; in place would
        copy = _scratch("blur", canvas.shape)  # make OpenCV clone the image every time
        np.copyto(copy, canvas)
        cv2.GaussianBlur(copy, (3, 3), 0, dst=canvas)
    if r.random() < spec.noise and spec.noise_level > 0:
        grain = _noise_bank(spec.noise_level, w, h)
        dx, dy = r.integers(0, _NOISE_PAD), r.integers(0, _NOISE_PAD)
        ex, ey = r.integers(1, _NOISE_PAD), r.integers(0, _NOISE_PAD)  # another window
        cv2.add(canvas, grain[dy:dy + h, dx:dx + w], dst=canvas)
        ex = (dx + ex) % _NOISE_PAD
        cv2.subtract(canvas, grain[ey:ey + h, ex:ex + w], dst=canvas)


_NOISE_PAD = 64


@functools.lru_cache(maxsize=4)
def _noise_bank(level: int, w: int, h: int) -> np.ndarray:
    """A fixed grain field of 0..level (same in every process). An image adds one window
    of it and subtracts another (never the same): noise in ±level, triangular.

    Drawing fresh noise per image cost more than the JPEG encoding itself; one field,
    not a positive and a negative one, halves what the noise reads from memory.
    """
    grain = np.random.default_rng(0x5EED).integers(
        0, level + 1, (h + _NOISE_PAD, w + _NOISE_PAD), dtype=np.uint8)
    return cv2.merge([grain] * 3)


# --------------------------------------------------------------------------- one mark

def _mark(r: _Rand, spec: SynthSpec, assets: _Assets, tone: _Tone) -> tuple[_Patch, int]:
    """A transformed mark ready to paste, and its class."""
    size = r.uniform(*spec.mark_px)
    stretch = math.sqrt(1 + r.uniform(-spec.aspect, spec.aspect))
    if assets.templates:
        k = r.integers(0, len(assets.templates))
        levels, core = assets.templates[k]
        cls = spec.template_classes[k] if spec.template_classes else 0
    else:
        style = spec.procedural if spec.procedural != "mixed" else PROCEDURAL_STYLES[
            r.integers(0, len(PROCEDURAL_STYLES))]
        levels, core = _masks(style, r.integers(0, len(_THICKNESS)))
        fg, bg = (tone.colour(c) for c in _mark_colours(r))
        bg = fg if style in ("ring", "plain") else bg  # one colour: the × (and ring) is the mark
        cls = 0
    scale = size / max(core)
    fx = scale * stretch * (-1 if "h" in spec.flip and r.random() < 0.5 else 1)
    fy = scale / stretch * (-1 if "v" in spec.flip and r.random() < 0.5 else 1)
    angle = r.uniform(-spec.rotation, spec.rotation)
    shear = r.uniform(-spec.shear, spec.shear)
    warped = _warp(levels, fx, fy, angle, shear)
    if not assets.templates:
        return _paint(warped, fg, bg), cls
    bgra = _recolour(r, warped, spec.hue)
    return _Patch(cv2.transform(bgra, tone.premultiplied()), cv2.transform(bgra, _KEEP_BGRA),
                  cv2.inRange(bgra, (0, 0, 0, VISIBLE_ALPHA), (255, 255, 255, 255))), cls


_KEEP_BGRA = np.array([[0, 0, 0, -1, 255]] * 3, np.float32)  # BGRA -> 255 - alpha, thrice
_KEEP_MASK = np.array([[-1, 0, 0, 255]] * 3, np.float32)  # (alpha, ...) -> the same


def _warp(levels: list[np.ndarray], fx: float, fy: float, angle: float,
          shear: float) -> np.ndarray:
    """Scale by (fx, fy) (negative: mirror), shear and rotate about the centre in one
    resampling, onto a patch that just holds the result; transparent borders.

    The source is the pyramid level at most twice the output size, so bilinear sampling
    stays smooth; one warp of the mark's own pixels replaces resize, flip and rotate.
    BORDER_CONSTANT with zero alpha: nothing outside the mark is smeared in (ds7).
    """
    h0, w0 = levels[0].shape[:2]
    need_w, need_h = abs(fx) * w0, abs(fy) * h0
    src = levels[0]
    for m in levels[1:]:
        if m.shape[1] < need_w or m.shape[0] < need_h:
            break
        src = m
    h, w = src.shape[:2]
    fx, fy = fx * w0 / w, fy * h0 / h
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    m00, m01, m10, m11 = c * fx, (c * shear + s) * fy, -s * fx, (c - s * shear) * fy
    # bilinear support reaches half a source pixel past the edges; an even margin keeps
    # an unscaled, unrotated mark on whole pixels (no needless half-pixel blur)
    pad = 2 * math.ceil(max(abs(m00) + abs(m01), abs(m10) + abs(m11)) / 2)
    ow = math.ceil(abs(m00) * w + abs(m01) * h) + pad
    oh = math.ceil(abs(m10) * w + abs(m11) * h) + pad
    tx = (ow - 1) / 2 - (m00 * (w - 1) + m01 * (h - 1)) / 2
    ty = (oh - 1) / 2 - (m10 * (w - 1) + m11 * (h - 1)) / 2
    return cv2.warpAffine(src, np.array([[m00, m01, tx], [m10, m11, ty]]), (ow, oh),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0, 0))


def _pyramid_of(template: tuple[np.ndarray, tuple[int, int]]):
    return _pyramid(template[0]), template[1]


def _pyramid(img: np.ndarray) -> list[np.ndarray]:
    """The image and its area-averaged halvings down to about 16 px."""
    levels = [img]
    while min(levels[-1].shape[:2]) >= 32:
        m = levels[-1]
        levels.append(cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2),
                                 interpolation=cv2.INTER_AREA))
    return levels


def _recolour(r: _Rand, patch: np.ndarray, hue: float) -> np.ndarray:
    """Hue shift of the mark; valid on premultiplied colour because HSV hue ignores scale."""
    shift = int(round(r.uniform(-hue, hue) / 2))  # OpenCV hue unit is 2 degrees
    if not shift:
        return patch
    hsv = cv2.cvtColor(np.ascontiguousarray(patch[:, :, :3]), cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + shift) % 180).astype(np.uint8)
    out = patch.copy()
    out[:, :, :3] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return out


def _tight(pm: np.ndarray):
    """Crop a BGRA patch to its non-transparent pixels; also the core (visible) size."""
    x, y, w, h = cv2.boundingRect(pm[:, :, 3])
    if w == 0:
        return pm, None
    crop = np.ascontiguousarray(pm[y:y + h, x:x + w])
    _, _, cw, ch = cv2.boundingRect((crop[:, :, 3] >= VISIBLE_ALPHA).view(np.uint8))
    return crop, ((cw, ch) if cw else None)


def _premultiply(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[:, :, None] / 255
    pm = (bgr.astype(np.float32) * a + 0.5).astype(np.uint8)
    return np.dstack([pm, alpha])


def _unpremultiply(pm: np.ndarray) -> np.ndarray:
    a = pm[:, :, 3:4].astype(np.float32)
    bgr = np.where(a > 0, pm[:, :, :3] * 255.0 / np.maximum(a, 1), 0)
    return np.dstack([np.clip(bgr + 0.5, 0, 255).astype(np.uint8), pm[:, :, 3]])


# --------------------------------------------------------------------------- procedural ×

_THICKNESS = (0.10, 0.13, 0.16, 0.19)  # stroke width as a fraction of the mark
_MASK_PX = 128  # enough for antialiased edges; pastes warp a smaller pyramid level


@functools.cache  # few keys (style x stroke width)
def _masks(style: str, thickness: int | float) -> tuple[list[np.ndarray], tuple[int, int]]:
    """A × button as a pyramid of (alpha, alpha·cross, 0) masks, cropped tight; its core size.

    Drawn once per style and stroke width. Colour is linear in the two masks, so each
    paste warps them once and colours the result with one cv2.transform (_paint); the
    third channel is there because OpenCV's 3-channel paths are the vectorised ones.
    """
    t_frac = _THICKNESS[thickness] if isinstance(thickness, int) else thickness
    s = _MASK_PX
    alpha, cross = np.zeros((s, s), np.uint8), np.zeros((s, s), np.uint8)
    t, c = max(2, int(s * t_frac)), s // 2
    if style == "circle":
        cv2.circle(alpha, (c, c), c - 1, 255, -1, cv2.LINE_AA)
        arm = int(c * 0.42)
    elif style == "ring":  # a thin outline: the background shows between ring and ×
        ring = max(2, t // 2)
        cv2.circle(alpha, (c, c), c - 1 - ring // 2, 255, ring, cv2.LINE_AA)
        arm = int(c * 0.38)
    elif style == "square":
        _rounded_rect(alpha, 0, 0, s - 1, s - 1, s // 5, 255)
        arm = int(c * 0.42)
    else:
        arm = c - t // 2 - 1
    cv2.line(cross, (c - arm, c - arm), (c + arm, c + arm), 255, t, cv2.LINE_AA)
    cv2.line(cross, (c - arm, c + arm), (c + arm, c - arm), 255, t, cv2.LINE_AA)
    if style in ("ring", "plain"):
        np.maximum(alpha, cross, out=alpha)
    both = cv2.merge([alpha, cv2.multiply(alpha, cross, scale=1 / 255), np.zeros_like(alpha)])
    x, y, w, h = cv2.boundingRect(alpha)
    both = np.ascontiguousarray(both[y:y + h, x:x + w])
    _, _, cw, ch = cv2.boundingRect((both[:, :, 0] >= VISIBLE_ALPHA).view(np.uint8))
    return _pyramid(both), (cw, ch)


def _paint(masks: np.ndarray, fg, bg) -> _Patch:
    """Colour warped masks: premultiplied colour = alpha·bg + alpha·cross·(fg − bg)."""
    k = 1 / 255
    m = np.array(((bg[0] * k, (fg[0] - bg[0]) * k, 0), (bg[1] * k, (fg[1] - bg[1]) * k, 0),
                  (bg[2] * k, (fg[2] - bg[2]) * k, 0)), np.float32)
    return _Patch(cv2.transform(masks, m), cv2.transform(masks, _KEEP_MASK),
                  cv2.inRange(masks, (VISIBLE_ALPHA, 0, 0), (255, 255, 255)))


def _mark_colours(r: _Rand) -> tuple[tuple, tuple]:
    """Foreground/background pairs seen on game close buttons (BGR)."""
    bg = r.colour()
    if r.random() < 0.7:  # light × on a darker button
        return r.colour(215, 256), tuple(int(v * 0.6) for v in bg)
    return r.colour(0, 60), tuple(128 + v // 2 for v in bg)


def _rounded_rect(img, x0, y0, x1, y1, radius, colour, line=cv2.LINE_AA) -> None:
    radius = int(max(0, min(radius, (x1 - x0) // 2, (y1 - y0) // 2)))
    if radius == 0:
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        return
    cv2.rectangle(img, (x0 + radius, y0), (x1 - radius, y1), colour, -1)
    cv2.rectangle(img, (x0, y0 + radius), (x1, y1 - radius), colour, -1)
    for cx, cy in ((x0 + radius, y0 + radius), (x1 - radius, y0 + radius),
                   (x0 + radius, y1 - radius), (x1 - radius, y1 - radius)):
        cv2.circle(img, (cx, cy), radius, colour, -1, line)


# --------------------------------------------------------------------------- backgrounds

def _background(r: _Rand, assets: _Assets, canvas: np.ndarray) -> None:
    if assets.backgrounds:
        _crop_background(r, _load_background(
            assets.backgrounds[r.integers(0, len(assets.backgrounds))]), canvas)
    else:
        _ui_canvas(r, canvas)


def _crop_background(r: _Rand, img: np.ndarray, canvas: np.ndarray) -> None:
    """A canvas-sized window of a real background at its own scale (scaled up only if small)."""
    h, w = canvas.shape[:2]
    bh, bw = img.shape[:2]
    if bw < w or bh < h:
        k = max(w / bw, h / bh)
        img = cv2.resize(img, (max(w, round(bw * k)), max(h, round(bh * k))))
        bh, bw = img.shape[:2]
    x, y = r.integers(0, bw - w + 1), r.integers(0, bh - h + 1)
    np.copyto(canvas, img[y:y + h, x:x + w])


def _ui_canvas(r: _Rand, img: np.ndarray) -> None:
    """A phone-game-like screen: flat or gradient, panels, text-like strokes and icons."""
    h, w = img.shape[:2]
    if r.random() < 0.5:
        cv2.rectangle(img, (0, 0), (w, h), r.colour(), -1)  # 30x faster than numpy's fill
    else:
        _gradient(r.colour(), r.colour(), img)
    area = max(1, round(w * h / (416 * 416)))
    unit = min(w, h)
    for _ in range(r.integers(1, 3 + area)):
        x0, y0 = r.integers(-(unit // 4), w), r.integers(-(unit // 4), h)
        x1, y1 = x0 + r.integers(unit // 8, unit), y0 + r.integers(unit // 10, unit)
        _rounded_rect(img, x0, y0, x1, y1, r.integers(0, unit // 12 + 1), r.colour(), cv2.LINE_8)
    for _ in range(r.integers(0, 2 + area)):
        _text_line(r, img, w, h)
    for _ in range(r.integers(0, 3 + area)):
        _icon(r, img, w, h)


def _gradient(top, bottom, img: np.ndarray, steps: int = 24) -> None:
    """A vertical gradient in bands, flat over its first and last quarter: the bands are
    a two-pixel image resized (one call), copied down by np.take (mode="clip" keeps take
    from buffering). Drawing the bands as rectangles cost twice as much."""
    h, w = img.shape[:2]
    rows = cv2.resize(np.array([[top], [bottom]], np.uint8), (w, steps),
                      interpolation=cv2.INTER_LINEAR)
    np.take(rows.reshape(steps, -1), _band_of_row(steps, h), axis=0, out=img.reshape(h, -1),
            mode="clip")


@functools.lru_cache(maxsize=8)
def _band_of_row(steps: int, h: int) -> np.ndarray:
    return np.arange(h) * steps // h


_LETTERS = "abcdefghijklmnopqrstuvwyzABCDEFGHIJKLMNOPQRSTUVWYZ0123456789 "  # no x/X on purpose
_TEXT = "".join(np.random.default_rng(7).choice(list(_LETTERS), 4096))  # slices make "words"
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX)


def _text_line(r: _Rand, img: np.ndarray, w: int, h: int) -> None:
    start = r.integers(0, len(_TEXT) - 16)
    text = _TEXT[start:start + r.integers(3, 16)]
    scale = r.uniform(0.35, 1.0) * max(1.0, min(w, h) / 416)
    org = (r.integers(0, w), r.integers(12, h))
    cv2.putText(img, text, org, _FONTS[r.integers(0, len(_FONTS))], scale, r.colour(),
                max(1, int(scale * 2)), cv2.LINE_AA)


def _icon(r: _Rand, img: np.ndarray, w: int, h: int) -> None:
    s = r.integers(8, max(9, min(w, h) // 8))
    x, y = r.integers(0, w), r.integers(0, h)
    if r.random() < 0.5:
        cv2.circle(img, (x, y), s // 2, r.colour(), -1, cv2.LINE_AA)
    else:
        _rounded_rect(img, x, y, x + s, y + s, s // 4, r.colour(), cv2.LINE_8)


def _draw_distractor(r: _Rand, img: np.ndarray, mark_px) -> None:
    """Shapes a detector must not call "×": plus, circle, ring, tick, minus, slash, star."""
    h, w = img.shape[:2]
    s = int(r.uniform(mark_px[0] * 0.7, mark_px[1] * 1.3))
    x, y = r.integers(0, max(1, w - s)), r.integers(0, max(1, h - s))
    c, col, t = (x + s // 2, y + s // 2), r.colour(), max(2, int(s * r.uniform(0.08, 0.18)))
    rad = s // 2
    kind = r.integers(0, 7)
    if kind == 0:  # plus sign: a × turned 45°, so kept within ±15° of upright
        a = math.radians(r.uniform(-15, 15))
        _spokes(img, c, rad, (a, a + math.pi / 2), col, t)
    elif kind == 1:
        cv2.circle(img, c, rad, col, -1, cv2.LINE_AA)
    elif kind == 2:  # ring: an annulus filled in one call, 5x cheaper than a thick AA circle
        outer, inner = (cv2.ellipse2Poly(c, (q, q), 0, 0, 360, 5) for q in (rad, max(1, rad - t)))
        cv2.fillPoly(img, [outer, inner], col, cv2.LINE_AA)
    elif kind == 3:  # tick
        pts = np.array([[x, y + rad], [x + rad * 2 // 3, y + s], [x + s, y]], np.int32)
        cv2.polylines(img, [pts], False, col, t, cv2.LINE_AA)
    elif kind == 4:  # minus
        cv2.line(img, (x, c[1]), (x + s, c[1]), col, t, cv2.LINE_AA)
    elif kind == 5:  # one diagonal only
        cv2.line(img, (x, y + s), (x + s, y), col, t, cv2.LINE_AA)
    else:  # six-armed star
        _spokes(img, c, rad, [math.pi / 2 + k * math.pi / 3 for k in range(3)], col, t)


def _spokes(img, c, rad: int, angles, col, t: int) -> None:
    for d in angles:
        dx, dy = int(rad * math.cos(d)), int(rad * math.sin(d))
        cv2.line(img, (c[0] - dx, c[1] - dy), (c[0] + dx, c[1] + dy), col, t, cv2.LINE_AA)


# --------------------------------------------------------------------------- sheet

def _thumbnail(image: str, label: str, thumb: int) -> np.ndarray:
    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInput("cannot read an image for the contact sheet", path=str(image),
                       hint="check the synthesis output folder")
    h, w = img.shape[:2]
    k = thumb / max(w, h)
    small = cv2.resize(img, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    for line in Path(label).read_text().split("\n") if Path(label).exists() else []:
        parts = line.split()
        if len(parts) != 5:
            continue
        _, cx, cy, bw, bh = (float(v) for v in parts)
        x0, y0 = int((cx - bw / 2) * sw), int((cy - bh / 2) * sh)
        x1, y1 = int(math.ceil((cx + bw / 2) * sw)), int(math.ceil((cy + bh / 2) * sh))
        x0, y0, x1, y1 = x0 - 1, y0 - 1, max(x1, x0 + 2), max(y1, y0 + 2)
        cv2.rectangle(small, (x0 - 1, y0 - 1), (x1 + 1, y1 + 1), (0, 0, 0), 1)  # any background
        cv2.rectangle(small, (x0, y0), (x1, y1), (255, 0, 255), 1)
    return small
