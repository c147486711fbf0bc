"""What packaging a screens set measures and checks (farm.datasets.screens is the set).

While the packer copies each full screenshot it measures the screen and every labelled
mark in screen pixels (the manifest's `screens`, which synthesis from screens
reproduces); a box that leaves its screen is a finding. After the copy, the screens lint
adds its rules to the dataset lint of the list. Kept beside the packer so that packaging
never imports the screens set it makes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from farm.darknet.dialect import Dialect
from farm.errors import Finding, FindingsError, Severity

#: px of slack for a box edge past the screen: labelImg's integer corners, YOLO's 6 decimals
EDGE_SLACK_PX = 1.0
_MAX_FINDINGS = 200


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
        for n, box in label_boxes(label):
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


def label_boxes(label: str) -> Iterator[tuple[int, tuple]]:
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
