"""The draws of one image, and its tone: all an image's randomness comes from here."""
from __future__ import annotations

import random

import cv2
import numpy as np


class Rand(random.Random):
    """The draws of one image. Python's Mersenne Twister: seeding it costs a quarter of
    creating a numpy Generator, and each of the ~80 small draws is one C call."""

    @classmethod
    def of(cls, seed: int, index: int) -> "Rand":
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


class Tone:
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
