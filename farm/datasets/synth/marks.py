"""One mark ready to paste: a template or a procedural × transformed, recoloured and
toned, with the core of its pixels a label boxes."""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

from farm.datasets.synth.draws import Rand, Tone
from farm.datasets.synth.pixels import (pyramid, recolour, rounded_rect, tight,
                                        unpremultiply, warp)
from farm.datasets.synth.spec import PROCEDURAL_STYLES, VISIBLE_ALPHA, SynthSpec
from farm.errors import BadInput


def make_close_mark(size: int = 64, style: str = "circle", fg=(255, 255, 255),
                    bg=(60, 60, 60), thickness: float = 0.14) -> np.ndarray:
    """A "×" close mark as BGRA (straight alpha), antialiased; RGB colours.

    Its half-opaque pixels (what a label would box) span `size` px; the soft edge adds one.

    So that a demo or test needs no template files.
    """
    if style not in PROCEDURAL_STYLES:
        raise BadInput(f"unknown close-mark style {style!r}",
                       hint=f"use one of {', '.join(PROCEDURAL_STYLES)}")
    levels, core = cross_masks(style, float(thickness))
    k = size / max(core)
    fg, bg = tuple(fg)[::-1], tuple(bg)[::-1]
    masks = warp(levels, k, k, 0.0, 0.0)
    colour = paint(masks, fg, fg if style in ("ring", "plain") else bg).colour
    return unpremultiply(tight(np.dstack([colour, masks[:, :, 0]]))[0])


class Patch(NamedTuple):
    """A mark ready to paste: premultiplied BGR, the share of the background it keeps
    (255 − alpha, three channels) and its core (alpha ≥ VISIBLE_ALPHA, 0/255). Both blend
    operands come ready-made from one cv2.transform each, so a paste is two saturating
    OpenCV calls and no conversions."""

    colour: np.ndarray
    keep: np.ndarray
    core: np.ndarray


def mark(r: Rand, spec: SynthSpec, templates: list, tone: Tone) -> tuple[Patch, int]:
    """A transformed mark ready to paste, and its class (`templates`: the spec's, as
    Assets.templates holds them; none: a procedural ×)."""
    size = r.uniform(*spec.mark_px)
    stretch = math.sqrt(1 + r.uniform(-spec.aspect, spec.aspect))
    if templates:
        k = r.integers(0, len(templates))
        levels, core = templates[k]
        cls = spec.template_classes[k] if spec.template_classes else 0
    else:
        style = spec.procedural if spec.procedural != "mixed" else PROCEDURAL_STYLES[
            r.integers(0, len(PROCEDURAL_STYLES))]
        levels, core = cross_masks(style, r.integers(0, len(_THICKNESS)))
        fg, bg = (tone.colour(c) for c in _mark_colours(r))
        bg = fg if style in ("ring", "plain") else bg  # one colour: the × (and ring) is the mark
        cls = 0
    scale = size / max(core)
    fx = scale * stretch * (-1 if "h" in spec.flip and r.random() < 0.5 else 1)
    fy = scale / stretch * (-1 if "v" in spec.flip and r.random() < 0.5 else 1)
    angle = r.uniform(-spec.rotation, spec.rotation)
    shear = r.uniform(-spec.shear, spec.shear)
    warped = warp(levels, fx, fy, angle, shear)
    if not templates:
        return paint(warped, fg, bg), cls
    bgra = recolour(r, warped, spec.hue)
    return Patch(cv2.transform(bgra, tone.premultiplied()), cv2.transform(bgra, _KEEP_BGRA),
                  cv2.inRange(bgra, (0, 0, 0, VISIBLE_ALPHA), (255, 255, 255, 255))), cls


_KEEP_BGRA = np.array([[0, 0, 0, -1, 255]] * 3, np.float32)  # BGRA -> 255 - alpha, thrice
_KEEP_MASK = np.array([[-1, 0, 0, 255]] * 3, np.float32)  # (alpha, ...) -> the same


_THICKNESS = (0.10, 0.13, 0.16, 0.19)  # stroke width as a fraction of the mark
_MASK_PX = 128  # enough for antialiased edges; pastes warp a smaller pyramid level


@functools.cache  # few keys (style x stroke width)
def cross_masks(style: str, thickness: int | float) -> tuple[list[np.ndarray], tuple[int, int]]:
    """A × button as a pyramid of (alpha, alpha·cross, 0) masks, cropped tight; its core size.

    Drawn once per style and stroke width. Colour is linear in the two masks, so each
    paste warps them once and colours the result with one cv2.transform (paint); the
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
        rounded_rect(alpha, 0, 0, s - 1, s - 1, s // 5, 255)
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
    return pyramid(both), (cw, ch)


def paint(masks: np.ndarray, fg, bg) -> Patch:
    """Colour warped masks: premultiplied colour = alpha·bg + alpha·cross·(fg − bg)."""
    k = 1 / 255
    m = np.array(((bg[0] * k, (fg[0] - bg[0]) * k, 0), (bg[1] * k, (fg[1] - bg[1]) * k, 0),
                  (bg[2] * k, (fg[2] - bg[2]) * k, 0)), np.float32)
    return Patch(cv2.transform(masks, m), cv2.transform(masks, _KEEP_MASK),
                  cv2.inRange(masks, (VISIBLE_ALPHA, 0, 0), (255, 255, 255)))


def _mark_colours(r: Rand) -> tuple[tuple, tuple]:
    """Foreground/background pairs seen on game close buttons (BGR)."""
    bg = r.colour()
    if r.random() < 0.7:  # light × on a darker button
        return r.colour(215, 256), tuple(int(v * 0.6) for v in bg)
    return r.colour(0, 60), tuple(128 + v // 2 for v in bg)
