"""Labelled test screenshots, drawn here: phone-game-like screens with "×" close marks,
saved as labelImg saves them (PNG + Pascal-VOC XML beside it). Nothing is downloaded.

The marks are drawn differently from farm.datasets.synth's (a dark disc with a light ×,
antialiased lines), so a network trained on synthesis from these screens meets them
only through the screens themselves.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_close(img: np.ndarray, x: int, y: int, s: int, rng: np.random.Generator) -> None:
    """A close button in the square (x, y, s): a disc and a light × inside it."""
    r = s / 2
    c = (int(round(x + r)), int(round(y + r)))
    disc = tuple(int(v) for v in rng.integers(20, 90, 3))
    cv2.circle(img, c, int(r) - 1, disc, -1, cv2.LINE_AA)
    k = 0.28 * s
    t = max(1, int(round(s / 9)))
    ink = tuple(int(v) for v in rng.integers(215, 256, 3))
    for sx in (-1, 1):
        cv2.line(img, (int(c[0] - k), int(c[1] - sx * k)), (int(c[0] + k), int(c[1] + sx * k)),
                 ink, t, cv2.LINE_AA)


def background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A gradient with panels, bars and text-like strokes."""
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp).astype(np.uint8).repeat(w, axis=1)
    img = np.ascontiguousarray(img)
    for _ in range(max(3, w * h // 40000)):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 20, h // 5))
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    for _ in range(max(2, w * h // 60000)):
        org = (int(rng.integers(0, w - 20)), int(rng.integers(12, h)))
        cv2.putText(img, "Lv 12 OK", org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 + rng.random() * (w / 600),
                    tuple(int(v) for v in rng.integers(0, 256, 3)), 1, cv2.LINE_AA)
    return img


def voc_xml(filename: str, w: int, h: int, boxes, name: str = "close") -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n"
        f"\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n" for x0, y0, x1, y1 in boxes)
    return (f"<annotation>\n\t<folder>shots</folder>\n\t<filename>{filename}</filename>\n"
            f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}"
            f"</annotation>\n")


def labelimg_folder(root: Path, count: int, *, size=(216, 480), mark_px=(14, 22),
                    marks=(1, 3), seed: int = 0) -> list[list[tuple[int, int, int, int]]]:
    """`count` screens of `size` with 1-3 close marks each, PNG + labelImg XML in `root`,
    and obj.names. Returns each screen's boxes (x0, y0, x1, y1), pixels, exclusive ends."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "obj.names").write_text("close\n")
    rng = np.random.default_rng(seed)
    w, h = size
    every = []
    for k in range(count):
        img = background(w, h, rng)
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(marks[0], marks[1] + 1))):
            s = int(rng.integers(mark_px[0], mark_px[1] + 1))
            for _ in range(50):
                x, y = int(rng.integers(2, w - s - 2)), int(rng.integers(2, h - s - 2))
                if all(x + s + 4 <= a or a2 + 4 <= x or y + s + 4 <= b or b2 + 4 <= y
                       for a, b, a2, b2 in boxes):
                    break
            else:
                continue
            draw_close(img, x, y, s, rng)
            boxes.append((x, y, x + s, y + s))
        name = f"shot{k:03d}.png"
        cv2.imwrite(str(root / name), img)
        (root / f"shot{k:03d}.xml").write_text(voc_xml(name, w, h, boxes))
        every.append(boxes)
    return every
