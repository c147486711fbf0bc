"""A screens set: the user's own full screenshots, labelled, kept whole, for evaluation.

Why: the seed ended with 65 % mAP on synthetic tiles and about 0 % on real screenshots,
because nothing measured the real thing. A screens set is that measurement's ground
truth: labelImg output (or any YOLO-labelled folder) packaged as it is, never tiled,
never trained on. Every image goes to valid.txt (train.txt is empty, so `farm train` on
it is refused by the lint); the manifest records each screen's size and every mark's
size in screen pixels, which `farm dataset synth --from-screens` reproduces.

The screens lint adds, to the dataset lint of the list: a box that leaves the screen
(labelImg can save one when a box is dragged past the edge), a screen that cannot be
decoded, a set without a single mark. labelImg folders given as sources are imported
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
from farm.datasets.voc import import_voc
from farm.errors import BadInput, Finding, FindingsError, Severity

KIND = "screens"
#: px of slack for a box edge past the screen: labelImg's integer corners, YOLO's 6 decimals
EDGE_SLACK_PX = 1.0
_MAX_FINDINGS = 200


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


class ScreenStats:
    """What the manifest says about a screens set: screen sizes and every mark's size in
    screen pixels, gathered while packaging copies each screen (one in memory at a time);
    boxes that leave their screen are findings."""

    def __init__(self):
        self.sizes: dict[str, int] = {}
        self.marks: list[tuple[float, float]] = []
        self.bare = 0  # screens without a mark
        self.findings: list[Finding] = []

    def add(self, image: str, label: str) -> None:
        pixels = cv2.imread(image, cv2.IMREAD_COLOR)
        if pixels is None:
            self._finding(Finding(image, None, "the screen cannot be decoded",
                                  "re-export the screenshot (PNG or JPEG)"))
            return
        h, w = pixels.shape[:2]
        key = f"{w}x{h}"
        self.sizes[key] = self.sizes.get(key, 0) + 1
        found = 0
        for n, box in _label_boxes(label):
            _, cx, cy, bw, bh = box
            x0, y0, x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, \
                (cy + bh / 2) * h
            s = EDGE_SLACK_PX
            if x0 < -s or y0 < -s or x1 > w + s or y1 > h + s:
                self._finding(Finding(label, n, f"the box ({x0:.1f},{y0:.1f})-({x1:.1f},"
                                      f"{y1:.1f}) leaves the {w}x{h} screen",
                                      "redraw the box inside the screenshot in labelImg"))
                continue
            self.marks.append((bw * w, bh * h))
            found += 1
        self.bare += found == 0

    def _finding(self, finding: Finding) -> None:
        if len(self.findings) < _MAX_FINDINGS:
            self.findings.append(finding)

    def summary(self) -> dict:
        marks = np.array(self.marks, float).reshape(-1, 2)
        return {"screens": sum(self.sizes.values()), "sizes": dict(sorted(self.sizes.items())),
                "marks": len(marks), "without_marks": self.bare,
                "mark_px": {"w": [round(v, 2) for v in marks[:, 0]],
                            "h": [round(v, 2) for v in marks[:, 1]]},
                "long_side_px": size_quantiles(marks.max(axis=1) if len(marks) else marks)}


def size_quantiles(long: np.ndarray) -> dict | None:
    """min, p10, median, p90, max of mark sizes (px), or None without marks."""
    if not len(long):
        return None
    q = np.quantile(long, [0, 0.1, 0.5, 0.9, 1])
    return dict(zip(("min", "p10", "median", "p90", "max"), (round(float(v), 1) for v in q)))


def _label_boxes(label: str) -> Iterator[tuple[int, tuple]]:
    """(line, (class, cx, cy, w, h)) of a label file's well-formed lines (the dataset lint
    reports the others)."""
    try:
        text = Path(label).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            yield n, (int(parts[0]), *(float(v) for v in parts[1:]))
        except ValueError:
            continue


def lint_screens(folder: Path, stats: ScreenStats, classes: int, dialect: Dialect,
                 check_images: bool) -> list[str]:
    """The screens lint on a packaged (not yet renamed) screens set in `folder`: the
    dataset lint of its list, then the screens rules. Errors raise FindingsError;
    warnings are returned as text."""
    from farm.datasets.lint import lint_list
    report = lint_list(folder / "valid.txt", classes=classes, dialect=dialect, role="valid",
                       check_images=check_images, min_images_per_class=None)
    findings = report.findings + stats.findings
    if not stats.marks and not stats.findings:
        findings.append(Finding(str(folder / "valid.txt"), None, "no screen holds a labelled "
                                "mark: a screens set without marks scores nothing",
                                "label the × in the screenshots (labelImg) and package again"))
    if len(stats.sizes) > 1:
        findings.append(Finding(str(folder / "valid.txt"), None, "the screens have "
                                f"{len(stats.sizes)} sizes ({', '.join(stats.sizes)}): marks "
                                "measured on one scale are pasted at another",
                                "keep screenshots of one device per screens set", Severity.WARNING))
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        raise FindingsError(findings, "screens set")
    return [str(f).replace(str(folder), "<dataset>") for f in findings]


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
                              in _label_boxes(label)]


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
