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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from farm.datasets.synth.assets import Assets, assets_of
from farm.datasets.synth.canvas import background, draw_distractor
from farm.datasets.synth.draws import Rand, Tone
from farm.datasets.synth.marks import Patch, mark
from farm.datasets.synth.spec import SampleRecord, SynthSpec
from farm.errors import BadInput


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
    assets = assets_of(spec)
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
    return _render(spec, assets_of(spec), Rand.of(seed, index), out)


def _write_sample(spec, assets, out: str, i: int, seed: int, width: int) -> SampleRecord:
    r = Rand.of(seed, i)
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


@dataclass(slots=True)
class _Pasted:
    x: int
    y: int
    core: np.ndarray  # uint8 0/255 mask of the mark's visible-alpha pixels (patch coordinates)
    visible: np.ndarray  # same, minus what is occluded (core itself until something is)
    cls: int


def _render(spec: SynthSpec, assets: Assets, r: Rand, out: np.ndarray | None = None):
    w, h = spec.canvas
    tone = Tone(1 + r.uniform(-spec.contrast, spec.contrast),
                 r.uniform(-spec.brightness, spec.brightness) * 255)
    canvas = np.empty((h, w, 3), np.uint8) if out is None else out
    background(r, assets, canvas)
    if assets.backgrounds:  # generated canvases have random colours: tone the marks only
        tone.apply_lut(canvas)
    for _ in range(r.integers(spec.distractors[0], spec.distractors[1] + 1)):
        draw_distractor(r, canvas, spec.mark_px)
    pasted: list[_Pasted] = []
    negative = r.random() < spec.negatives
    for _ in range(0 if negative else r.integers(spec.marks[0], spec.marks[1] + 1)):
        patch, cls = mark(r, spec, assets.templates, tone)
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


def _free_spot(r: Rand, shape, pasted: list[_Pasted], w: int, h: int, tries: int = 20):
    """A top-left corner that keeps the mark mostly on the canvas and off other marks."""
    ph, pw = shape[:2]
    for _ in range(tries):
        x = r.integers(-(pw // 4), w - pw + pw // 4 + 1)
        y = r.integers(-(ph // 4), h - ph + ph // 4 + 1)
        if all(x + pw + 2 <= p.x or p.x + p.core.shape[1] + 2 <= x or
               y + ph + 2 <= p.y or p.y + p.core.shape[0] + 2 <= y for p in pasted):
            return x, y
    return None


def _composite(canvas: np.ndarray, patch: Patch, x: int, y: int) -> None:
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


def _occlude(r: Rand, canvas: np.ndarray, target: _Pasted, pasted: list[_Pasted]) -> None:
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


def _photometric(r: Rand, spec: SynthSpec, canvas: np.ndarray) -> None:
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
