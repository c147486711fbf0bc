"""What a lint collects (findings, capped per rule, and what the dataset holds), and the
rules one list is judged by."""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from farm.darknet.dialect import Dialect
from farm.errors import Finding, FindingsError, Severity

MAX_FINDINGS_PER_RULE = 50


@dataclass
class LintReport:
    """What the lint found, and what the dataset holds."""

    findings: list[Finding] = field(default_factory=list)
    images: int = 0  # list entries that are image paths
    labels: int = 0  # label files read
    objects: int = 0  # boxes in them
    negatives: int = 0  # images whose label file is empty (background only)
    class_counts: Counter = field(default_factory=Counter)  # boxes per class id
    class_images: Counter = field(default_factory=Counter)  # images per class id
    # hash() of each image path in list order: 8 bytes an image, all the lint keeps to find
    # duplicates and train/valid overlap (process-local: str hashes are salted per process)
    digests: array = field(default_factory=lambda: array("q"), repr=False)
    #: the list's image entries read again, (line, entry, image) each (lint_list's)
    source: Callable[[], Iterator[tuple[int, str, str]]] | None = field(default=None,
                                                                      repr=False)

    @property
    def paths(self) -> dict[str, int]:
        """image → its first line in the list, read again from the list when asked: a
        table of every path made the lint's memory grow with the list (0.3 KB an image)."""
        first: dict[str, int] = {}
        for lineno, _, image in self.source() if self.source else ():
            first.setdefault(image, lineno)
        return first

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self, what: str = "dataset") -> None:
        if self.errors:
            raise FindingsError(self.findings, what)

    def merge(self, other: "LintReport") -> None:
        self.findings += other.findings
        self.images += other.images
        self.labels += other.labels
        self.objects += other.objects
        self.negatives += other.negatives
        self.class_counts += other.class_counts
        self.class_images += other.class_images

    def summary(self) -> str:
        return (f"{self.images} images, {self.labels} label files, {self.objects} objects, "
                f"{self.negatives} negatives; {len(self.errors)} errors, "
                f"{len(self.warnings)} warnings")


class Findings:
    """Collects findings, at most `cap` per rule, then one line saying how many more."""

    def __init__(self, cap: int):
        self.cap = cap
        self.items: list[Finding] = []
        self.counts: Counter = Counter()
        self.first: dict[str, Finding] = {}

    def add(self, rule: str, path: str, line: int | None, reason: str, fix: str,
            severity: Severity = Severity.ERROR) -> None:
        self.counts[rule] += 1
        if self.counts[rule] <= self.cap:
            finding = Finding(path, line, reason, fix, severity)
            self.items.append(finding)
            self.first.setdefault(rule, finding)

    def done(self, list_path: str) -> list[Finding]:
        for rule, n in self.counts.items():
            if n > self.cap:
                first = self.first[rule]
                self.items.append(Finding(list_path, None, f"… and {n - self.cap} more like "
                                          f"this ({n} in all): {first.reason}", first.fix,
                                          first.severity))
        return self.items


@dataclass
class Rules:
    classes: int
    dialect: Dialect
    role: str
    base_dir: str
    fallback_dir: str | None  # tried when an image is not under base_dir
    check_images: bool
    net_size: tuple[int, int] | None
    min_object_px: float
