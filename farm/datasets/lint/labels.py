"""Label files: `class x y w h` lines, checked a few thousand files at a time with numpy,
and line by line (each problem with its line and fix) only where something is wrong."""
from __future__ import annotations

import numpy as np

from farm.datasets.lint.raw import BOM
from farm.datasets.lint.report import Findings, LintReport, Rules
from farm.errors import Severity


class LabelBatch:
    """Label files that are plainly well-formed (no BOM, no CR, no blank line, five fields
    on every line) are checked together with numpy, a few thousand at a time: parsing
    them one float() at a time was most of the lint's time. A file with any value that
    fails a check goes back through parse_label, which reports it line by line."""

    SIZE = 4096

    def __init__(self, rules: Rules, report: LintReport, out: Findings):
        self.rules, self.report, self.out = rules, report, out
        self.labels: list[str] = []
        self.datas: list[bytes] = []
        self.rows: list[int] = []
        self.tokens: list[bytes] = []

    def offer(self, label: str, data: bytes) -> bool:
        """Take the file if it is plainly well-formed; False: parse it line by line."""
        if data[:3] == BOM or b"\r" in data or b"\n\n" in data or data[:1] == b"\n":
            return False
        tokens = data.split()
        rows = data.count(b"\n") + (data[-1:] != b"\n")
        if not tokens or len(tokens) != 5 * rows:
            return False
        self.labels.append(label)
        self.datas.append(data)
        self.rows.append(rows)
        self.tokens += tokens
        if len(self.labels) >= self.SIZE:
            self.flush()
        return True

    def flush(self) -> None:
        if not self.labels:
            return
        file_of_row = np.repeat(np.arange(len(self.labels)), self.rows)
        parsed = self._parse()
        if parsed is None:
            bad = set(range(len(self.labels)))
        else:
            table, cls, good = parsed
            bad = set(file_of_row[~good].tolist()) | _duplicate_rows(table, file_of_row)
        for i in sorted(bad):
            parse_label(self.labels[i], self.datas[i], self.rules, self.report, self.out)
        if parsed is not None:
            keep = ~np.isin(file_of_row, np.fromiter(bad, int, len(bad)))
            self._count(file_of_row[keep], cls[keep])
        self.labels, self.datas, self.rows, self.tokens = [], [], [], []

    def _parse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(the fields as a table, class ids, rows passing every check), or None when some
        token is not a number."""
        table = np.array(self.tokens).reshape(-1, 5)
        try:
            digits = np.char.isdigit(table[:, 0])
            cls = np.where(digits, table[:, 0], b"-1").astype(np.int64)
            x, y, w, h = table[:, 1:].astype(np.float64).T
        except (ValueError, OverflowError):
            return None
        rules = self.rules
        good = (digits & (cls < rules.classes) & (0 < x) & (x <= 1) & (0 < y) & (y <= 1)
                & (0 < w) & (w <= 1) & (0 < h) & (h <= 1) & ((w < .99) | (h < .99)))
        if rules.net_size:
            good &= ((w * rules.net_size[0] >= rules.min_object_px)
                     & (h * rules.net_size[1] >= rules.min_object_px))
        return table, cls, good

    def _count(self, files: np.ndarray, cls: np.ndarray) -> None:
        report = self.report
        report.objects += int(len(cls))
        ids, n = np.unique(cls, return_counts=True)
        report.class_counts.update(dict(zip(ids.tolist(), n.tolist())))
        pairs = np.unique(np.stack([files, cls], axis=1), axis=0)
        ids, n = np.unique(pairs[:, 1], return_counts=True)
        report.class_images.update(dict(zip(ids.tolist(), n.tolist())))


def _duplicate_rows(table: np.ndarray, file_of_row: np.ndarray) -> set[int]:
    """The files in which the same box (the same five fields) appears twice."""
    keys = file_of_row.astype("S") + b":"
    for column in table.T:
        keys = np.char.add(np.char.add(keys, column), b" ")
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return set(file_of_row[first[counts > 1]].tolist())


def parse_label(label: str, data: bytes, rules: Rules, report: LintReport,
                 out: Findings) -> None:
    """Count the boxes of one label file; a line that fails the quick test goes to
    _check_box, which says what is wrong with it."""
    if data[:3] == BOM or b"\r" in data:
        data = _strip_bom_crlf(label, data, out)
    lines = data.split(b"\n")
    classes, counts = rules.classes, report.class_counts
    net_w, net_h = rules.net_size or (0, 0)
    min_px = rules.min_object_px if rules.net_size else 0.0
    found: list[int] = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            cid = _class_id(fields[0])
            x, y, w, h = map(float, fields[1:])
            good = (0 <= cid < classes and 0 < x <= 1 and 0 < y <= 1 and 0 < w <= 1
                    and 0 < h <= 1 and (w < .99 or h < .99)
                    and w * net_w >= min_px and h * net_h >= min_px)
        except ValueError:  # not numbers, or not 4 of them after the class id
            good = False
        if good or _check_box(label, n, fields, rules, out) is not None:
            found.append(cid)
    if not found:
        if not data.strip():
            report.negatives += 1
        return
    if len(found) > 1 and len(set(lines)) < len(lines):
        found = _drop_duplicates(label, lines, rules.classes, out)
    report.objects += len(found)
    for cid in found:
        counts[cid] += 1
    for cid in set(found):
        report.class_images[cid] += 1


def _class_id(token: bytes) -> int:
    """An integer as darknet's %d reads a whole field: digits, maybe a minus sign."""
    if not token.lstrip(b"-").isdigit():
        raise ValueError(token)
    return int(token)


def _strip_bom_crlf(label: str, data: bytes, out: Findings) -> bytes:
    if data[:3] == BOM:
        out.add("label.bom", label, 1, "the file starts with a byte-order mark (BOM): "
                "darknet's fscanf('%d …') fails on it and reads no box at all from this "
                "file", "save the label file as UTF-8 without BOM")
        data = data[3:]
    if b"\r" in data:
        out.add("label.crlf", label, data[:data.index(b"\r")].count(b"\n") + 1,
                "Windows (CRLF) line endings", "convert the label file to LF line endings "
                "(dos2unix)")
        data = data.replace(b"\r", b"")
    return data


def _drop_duplicates(label: str, lines: list[bytes], classes: int,
                     out: Findings) -> list[int]:
    """The class ids of the valid boxes, each box once; a finding for every repeat."""
    seen: dict[bytes, int] = {}
    kept: list[int] = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        key = b" ".join(fields)
        first = seen.setdefault(key, n)
        if first != n:
            out.add("label.duplicate", label, n, f"same box as line {first}: it counts "
                    "twice (and as a missed object in mAP)", f"delete line {n}")
        elif (cid := _quiet_class(fields, classes)) is not None:
            kept.append(cid)
    return kept


def _quiet_class(fields: list[bytes], classes: int) -> int | None:
    """The class id of a valid box line, without reporting anything (already reported)."""
    try:
        cid = _class_id(fields[0])
        x, y, w, h = (float(v) for v in fields[1:5])
    except (ValueError, IndexError):
        return None
    ok = len(fields) == 5 and 0 <= cid < classes and 0 < x <= 1 and 0 < y <= 1 \
        and 0 < w <= 1 and 0 < h <= 1
    return cid if ok else None


def _check_box(label: str, n: int, fields: list[bytes], rules: Rules,
               out: Findings) -> int | None:
    """The class id of a valid `class x y w h` line; None (with a finding) otherwise."""
    if len(fields) != 5:
        out.add("label.fields", label, n, f"{len(fields)} fields, expected 5 (class x y w h): "
                "darknet reads 5 numbers per box, so every later box on the file shifts",
                "write one box per line: class_id x_center y_center width height")
        return None
    try:
        cid = _class_id(fields[0])
        x, y, w, h = float(fields[1]), float(fields[2]), float(fields[3]), float(fields[4])
    except ValueError:
        out.add("label.number", label, n, f"{b' '.join(fields).decode(errors='replace')!r} "
                "is not an integer class id followed by four numbers",
                "write: class_id x_center y_center width height")
        return None
    if not 0 <= cid < rules.classes:
        out.add("label.class_id", label, n, f"class id {cid} is outside 0..{rules.classes - 1} "
                f"(classes={rules.classes}): such ids corrupt darknet's heap during mAP "
                "('realloc(): invalid old size') and are skipped or misread in training",
                f"use class ids 0..{rules.classes - 1}, or raise classes")
        return None
    if not (w > 0 and h > 0):
        out.add("label.size", label, n, f"zero or negative box size (w={w:g}, h={h:g})",
                "give the box a positive width and height, or delete the line")
        return None
    if not (0 < x <= 1 and 0 < y <= 1 and w <= 1 and h <= 1):
        out.add("label.range", label, n, f"coordinates outside (0, 1] (x={x:g} y={y:g} w={w:g} "
                f"h={h:g}): YOLO labels are fractions of the image size; darknet drops or "
                "clamps the box", "divide pixel values by the image width/height")
        return None
    _check_box_size(label, n, w, h, rules, out)
    return cid


def _check_box_size(label: str, n: int, w: float, h: float, rules: Rules,
                    out: Findings) -> None:
    if w >= 0.99 and h >= 0.99:
        out.add("label.whole_image", label, n, "the box covers the whole image: darknet "
                "stretches the image to the network size, so the object is learned "
                "stretched (seed ds3: a 32×32 mark labelled as the whole image)",
                "paste the object at its true scale on a larger canvas and label its own "
                "box", Severity.WARNING)
    if rules.net_size:
        px_w, px_h = w * rules.net_size[0], h * rules.net_size[1]
        if min(px_w, px_h) < rules.min_object_px:
            out.add("label.tiny", label, n, f"the object is {px_w:.1f}×{px_h:.1f} px at the "
                    f"network size {rules.net_size[0]}×{rules.net_size[1]}, under "
                    f"{rules.min_object_px:g} px: too small to detect",
                    "tile the images (crops at the network size) or raise width/height",
                    Severity.WARNING)
