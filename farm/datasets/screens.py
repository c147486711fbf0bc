"""A screens set: the user's own full screenshots, labelled, kept whole, for evaluation.

Why: the seed ended with 65 % mAP on synthetic tiles and about 0 % on real screenshots,
because nothing measured the real thing. A screens set is that measurement's ground
truth: labelImg output (or any YOLO-labelled folder) packaged as it is, never tiled,
never trained on. Every image goes to valid.txt (train.txt is empty, so `farm train` on
it is refused by the lint); the manifest records each screen's size and every mark's
size in screen pixels, which `farm dataset synth --from-screens` reproduces.

The screens lint (farm.datasets.package.screens, run by the packer) adds, to the
dataset lint of the list: a box that leaves the screen (labelImg can save one when a box
is dragged past the edge), a screen that cannot be decoded, a set without a single mark. labelImg folders given as sources are imported
first (farm.datasets.voc: an image with no XML, an unknown class, a box outside the
image are refused there, every finding listed).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from farm.darknet.dialect import Dialect
from farm.datasets.package import MANIFEST, PackageResult, package
from farm.datasets.package.screens import label_boxes
from farm.datasets.voc import import_voc
from farm.errors import BadInput

KIND = "screens"


# --------------------------------------------------------------------------- packaging

def package_screens(sources: Sequence[str | os.PathLike], root: str | os.PathLike, *,
                    names: str | os.PathLike | list[str] | None = None,
                    dialect: Dialect = Dialect.PJREDDIE, check_images: bool = True,
                    on_progress=None) -> PackageResult:
    """Package full screenshots as a screens set under root/<id>/.

    A source is a labelled folder (images/ + labels/, or .txt beside each image) or a
    labelImg folder (Pascal-VOC .xml beside the images), which is imported first and
    needs `names`. The same screens and labels always give the same id."""
    with tempfile.TemporaryDirectory(prefix="farm-screens-") as tmp:
        folders, warnings = [], []
        for k, src in enumerate(sources):
            if is_labelimg(Path(src)):
                if names is None:
                    raise BadInput("a labelImg folder needs the class names", path=str(src),
                                   hint="pass --names obj.names (the classes you labelled)")
                out = Path(tmp) / f"voc{k}"
                report = import_voc(src, names, out)
                warnings += [str(f) for f in report.warnings]
                folders.append(out)
            else:
                folders.append(Path(src))
        result = package(folders, root, names=names, valid_ratio=0.0, seed=0,
                         dialect=dialect, check_images=check_images, on_progress=on_progress,
                         kind=KIND)
    return replace(result, warnings=tuple(warnings) + result.warnings)


def is_labelimg(folder: Path) -> bool:
    """A folder of images with Pascal-VOC XML (labelImg's layout), not YOLO labels."""
    if not folder.is_dir() or (folder / "labels").is_dir():
        return False
    return any(name.lower().endswith(".xml") for _, _, files in os.walk(folder)
               for name in files)


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class Screens:
    """A packaged screens set, as evaluation and synthesis read it."""

    path: str      # the dataset folder
    obj_data: str
    manifest: dict

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def names(self) -> list[str]:
        return list(self.manifest["names"])

    @property
    def mark_px(self) -> np.ndarray:
        """(w, h) of every labelled mark, in screen pixels."""
        px = self.manifest["screens"]["mark_px"]
        return np.column_stack([px["w"], px["h"]]).astype(float).reshape(-1, 2)

    def items(self) -> Iterator[tuple[str, list[tuple[int, float, float, float, float]]]]:
        """(image, [(class, x0, y0, x1, y1) in pixels]) of every screen, in list order.
        Images are read (for their size) one at a time."""
        with open(Path(self.path) / "valid.txt") as listing:
            for line in listing:
                image = line.strip()
                if not image:
                    continue
                pixels = cv2.imread(image, cv2.IMREAD_COLOR)
                if pixels is None:
                    raise BadInput("a screen of the set cannot be read", path=image,
                                   hint="the set was changed after packaging: package it again")
                h, w = pixels.shape[:2]
                label = os.path.splitext(image)[0] + ".txt"
                yield image, [(c, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                               (cy + bh / 2) * h) for _, (c, cx, cy, bw, bh)
                              in label_boxes(label)]


def open_screens(path: str | os.PathLike) -> Screens:
    """The screens set at `path`: its folder, its obj.data or its manifest.json."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BadInput("not a packaged dataset: no manifest.json beside it", path=str(p),
                       hint="package the labelled screenshots with "
                            "`farm dataset package --kind screens SRC --names obj.names`"
                       ) from None
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read the manifest: {e}", path=str(manifest_path),
                       hint="package the screens again") from None
    if manifest.get("kind") != KIND:
        raise BadInput("this dataset is a training dataset, not a screens set",
                       path=str(folder), hint="package full labelled screenshots with "
                                              "`farm dataset package --kind screens`")
    return Screens(str(folder.resolve()), str((folder / "obj.data").resolve()), manifest)


def describe(screens: Screens) -> str:
    """One line: how many screens and marks, and the marks' sizes."""
    s = screens.manifest["screens"]
    q = s.get("long_side_px") or {}
    sizes = ", ".join(f"{k} ({v})" for k, v in s["sizes"].items())
    marks = (f"marks {q['min']:g}-{q['max']:g} px (median {q['median']:g})" if q
             else "no marks")
    return f"{s['screens']} screens [{sizes}], {s['marks']} marks, {marks}"
