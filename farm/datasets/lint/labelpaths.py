"""Where each dialect's darknet looks for an image's label file (darknet.md §8)."""
from __future__ import annotations

import os

from farm.darknet.dialect import Dialect

_A_DIRS = (("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
           ("/JPEGImages/", "/labels/"), ("/images/train2014/", "/labels/train2014/"),
           ("/images/val2014/", "/labels/val2014/"))
_A_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM",
           ".tiff", ".TIFF")
_P_SUBS = (("images", "labels"), ("JPEGImages", "labels"), ("raw", "labels"),
           (".jpg", ".txt"), (".png", ".txt"), (".JPG", ".txt"), (".JPEG", ".txt"))


def label_path(image: str, dialect: Dialect = Dialect.PJREDDIE) -> str | None:
    """The label file darknet reads for `image`, or None when it cannot derive one."""
    return LABEL_RULES[Dialect.of(dialect)](image)


def _hankai_label(image: str) -> str:
    dot = image.rfind(".")
    return (image[:dot] if dot >= 0 else image) + ".txt"


def _pjreddie_label(image: str) -> str | None:
    out = image
    for old, new in _P_SUBS:
        out = out.replace(old, new, 1)
    return out if out.endswith(".txt") and out != image else None


def _alexeyab_label(image: str) -> str | None:
    out = image
    for old, new in _A_DIRS:
        out = out.replace(old, new, 1)
    out = out.strip(" \t")
    for ext in _A_EXTS:
        at = out.find(ext)  # darknet looks at the first occurrence only
        if at >= 0 and at + len(ext) == len(out):
            return out[:at] + ".txt"
    return None


LABEL_RULES = {Dialect.PJREDDIE: _pjreddie_label, Dialect.ALEXEYAB: _alexeyab_label,
                Dialect.HANKAI: _hankai_label}


def sibling_label(image: str) -> str:
    root, _ = os.path.splitext(image)
    return root + ".txt"


def replacements_note(image: str, derived: str) -> str:
    parts = [f"'{old}'→'{new}'" for old, new in _P_SUBS[:3] if old in image]
    if not parts:
        return ""
    return f" (pjreddie replaced the first {', '.join(parts)} anywhere in the path)"
