"""What marks are pasted on: a window of a real background, or a generated phone-game
screen; and the shapes a detector must not call "×"."""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from farm.datasets.synth.assets import Assets, load_background
from farm.datasets.synth.draws import Rand
from farm.datasets.synth.pixels import rounded_rect


def background(r: Rand, assets: Assets, canvas: np.ndarray) -> None:
    if assets.backgrounds:
        _crop_background(r, load_background(
            assets.backgrounds[r.integers(0, len(assets.backgrounds))]), canvas)
    else:
        _ui_canvas(r, canvas)


def _crop_background(r: Rand, img: np.ndarray, canvas: np.ndarray) -> None:
    """A canvas-sized window of a real background at its own scale (scaled up only if small)."""
    h, w = canvas.shape[:2]
    bh, bw = img.shape[:2]
    if bw < w or bh < h:
        k = max(w / bw, h / bh)
        img = cv2.resize(img, (max(w, round(bw * k)), max(h, round(bh * k))))
        bh, bw = img.shape[:2]
    x, y = r.integers(0, bw - w + 1), r.integers(0, bh - h + 1)
    np.copyto(canvas, img[y:y + h, x:x + w])


def _ui_canvas(r: Rand, img: np.ndarray) -> None:
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
        rounded_rect(img, x0, y0, x1, y1, r.integers(0, unit // 12 + 1), r.colour(), cv2.LINE_8)
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


def _text_line(r: Rand, img: np.ndarray, w: int, h: int) -> None:
    start = r.integers(0, len(_TEXT) - 16)
    text = _TEXT[start:start + r.integers(3, 16)]
    scale = r.uniform(0.35, 1.0) * max(1.0, min(w, h) / 416)
    org = (r.integers(0, w), r.integers(12, h))
    cv2.putText(img, text, org, _FONTS[r.integers(0, len(_FONTS))], scale, r.colour(),
                max(1, int(scale * 2)), cv2.LINE_AA)


def _icon(r: Rand, img: np.ndarray, w: int, h: int) -> None:
    s = r.integers(8, max(9, min(w, h) // 8))
    x, y = r.integers(0, w), r.integers(0, h)
    if r.random() < 0.5:
        cv2.circle(img, (x, y), s // 2, r.colour(), -1, cv2.LINE_AA)
    else:
        rounded_rect(img, x, y, x + s, y + s, s // 4, r.colour(), cv2.LINE_8)


def draw_distractor(r: Rand, img: np.ndarray, mark_px) -> None:
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
