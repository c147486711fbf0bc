"""What a spec draws from: mark templates (as premultiplied pyramids) and background
files, read once per process; a bad one is refused here with its path."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from farm.datasets.synth.pixels import premultiply, pyramid_of, tight
from farm.datasets.synth.spec import IMAGE_EXTS, SynthSpec
from farm.errors import BadInput


@dataclass
class Assets:
    templates: list[tuple[list[np.ndarray], tuple[int, int]]]  # BGRA pyramid, core (w, h)
    backgrounds: list[str]


_ASSET_CACHE: dict = {}
_BG_CACHE: OrderedDict = OrderedDict()
_BG_CACHE_SIZE = 12


def load_assets(spec: SynthSpec) -> Assets:
    """Templates and background list of a spec (cached per process); bad ones raise here."""
    spec.check()
    return assets_of(spec)


def assets_of(spec: SynthSpec) -> Assets:
    key = (tuple(spec.templates), spec.colour_key and tuple(spec.colour_key), spec.key_tolerance,
           tuple(spec.backgrounds))
    if key not in _ASSET_CACHE:
        _ASSET_CACHE.clear()
        _ASSET_CACHE[key] = Assets(
            [pyramid_of(load_template(p, spec.colour_key, spec.key_tolerance))
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
    pm, core = tight(premultiply(bgr, alpha))
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


def load_background(path: str) -> np.ndarray:
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
