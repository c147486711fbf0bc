"""The boxes of a list's label files, for calc_anchors."""
from __future__ import annotations

import os

import numpy as np

from farm.darknet.dialect import Dialect
from farm.darknet.objdata import resolve
from farm.datasets.lint.images import IMAGE_EXTENSIONS
from farm.datasets.lint.labelpaths import LABEL_RULES
from farm.datasets.lint.raw import read_bytes
from farm.errors import BadInput


def box_sizes(list_path: str | os.PathLike, *, dialect: Dialect = Dialect.PJREDDIE,
              base_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, int]:
    """((w, h) of every valid box as fractions of its image, number of images) for the
    labels of an image list: what calc_anchors clusters."""
    list_path = os.fspath(list_path)
    list_dir = os.path.dirname(os.path.abspath(list_path))
    base = os.path.abspath(base_dir) if base_dir is not None else list_dir
    derive = LABEL_RULES[Dialect.of(dialect)]
    try:
        text = read_bytes(list_path).decode("utf-8", errors="surrogateescape")
    except OSError as e:
        raise BadInput(f"cannot read the image list ({e.strerror})", path=list_path) from None
    sizes: list[tuple[float, float]] = []
    images = 0
    for entry in text.split("\n"):
        entry = entry.strip()
        if not entry or os.path.splitext(entry)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        images += 1
        sizes += _label_sizes(derive(resolve(entry, base, list_dir)))
    return np.array(sizes, dtype=float).reshape(-1, 2), images


def _label_sizes(label: str | None) -> list[tuple[float, float]]:
    try:
        data = read_bytes(label) if label else b""
    except OSError:
        return []
    sizes = []
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) != 5:
            continue
        try:
            w, h = float(fields[3]), float(fields[4])
        except ValueError:
            continue
        if 0 < w <= 1 and 0 < h <= 1:
            sizes.append((w, h))
    return sizes
