"""A contact sheet: thumbnails with their YOLO boxes drawn, to look at before training."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from farm.errors import BadInput


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
