"""Image operations synthesis builds on: premultiplied alpha, tight crops, pyramids, one
resampling for scale, mirror, shear and rotation, a hue shift, rounded rectangles."""
from __future__ import annotations

import math

import cv2
import numpy as np

from farm.datasets.synth.draws import Rand
from farm.datasets.synth.spec import VISIBLE_ALPHA


def warp(levels: list[np.ndarray], fx: float, fy: float, angle: float,
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


def pyramid_of(template: tuple[np.ndarray, tuple[int, int]]):
    return pyramid(template[0]), template[1]


def pyramid(img: np.ndarray) -> list[np.ndarray]:
    """The image and its area-averaged halvings down to about 16 px."""
    levels = [img]
    while min(levels[-1].shape[:2]) >= 32:
        m = levels[-1]
        levels.append(cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2),
                                 interpolation=cv2.INTER_AREA))
    return levels


def recolour(r: Rand, patch: np.ndarray, hue: float) -> np.ndarray:
    """Hue shift of the mark; valid on premultiplied colour because HSV hue ignores scale."""
    shift = int(round(r.uniform(-hue, hue) / 2))  # OpenCV hue unit is 2 degrees
    if not shift:
        return patch
    hsv = cv2.cvtColor(np.ascontiguousarray(patch[:, :, :3]), cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + shift) % 180).astype(np.uint8)
    out = patch.copy()
    out[:, :, :3] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return out


def tight(pm: np.ndarray):
    """Crop a BGRA patch to its non-transparent pixels; also the core (visible) size."""
    x, y, w, h = cv2.boundingRect(pm[:, :, 3])
    if w == 0:
        return pm, None
    crop = np.ascontiguousarray(pm[y:y + h, x:x + w])
    _, _, cw, ch = cv2.boundingRect((crop[:, :, 3] >= VISIBLE_ALPHA).view(np.uint8))
    return crop, ((cw, ch) if cw else None)


def premultiply(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[:, :, None] / 255
    pm = (bgr.astype(np.float32) * a + 0.5).astype(np.uint8)
    return np.dstack([pm, alpha])


def unpremultiply(pm: np.ndarray) -> np.ndarray:
    a = pm[:, :, 3:4].astype(np.float32)
    bgr = np.where(a > 0, pm[:, :, :3] * 255.0 / np.maximum(a, 1), 0)
    return np.dstack([np.clip(bgr + 0.5, 0, 255).astype(np.uint8), pm[:, :, 3]])


def rounded_rect(img, x0, y0, x1, y1, radius, colour, line=cv2.LINE_AA) -> None:
    radius = int(max(0, min(radius, (x1 - x0) // 2, (y1 - y0) // 2)))
    if radius == 0:
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        return
    cv2.rectangle(img, (x0 + radius, y0), (x1 - radius, y1), colour, -1)
    cv2.rectangle(img, (x0, y0 + radius), (x1, y1 - radius), colour, -1)
    for cx, cy in ((x0 + radius, y0 + radius), (x1 - radius, y0 + radius),
                   (x0 + radius, y1 - radius), (x1 - radius, y1 - radius)):
        cv2.circle(img, (cx, cy), radius, colour, -1, line)
