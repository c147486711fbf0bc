"""Dataset lint: refuse a dataset darknet would misread, before a CPU second is spent on it.

The seed lost days to lists and labels darknet accepts without a word: a `.txt` path and a
blank line in valid.txt ("Cannot load image", a meaningless mAP), class ids outside
0..classes-1 (heap corruption in the mAP code, `realloc(): invalid old size`), labels
where darknet does not look for them. Each rule here names the file, the line, what
darknet does with it, and the fix.

The farm runs this before every training attempt and before packaging, so it must be
fast: files are read with os.open/os.read (no Python file objects), images are checked by
their first and last bytes only (magic number, JPEG end marker FFD9, PNG IEND chunk), and
label lines are split with bytes.split(), not regular expressions.
"""
from __future__ import annotations

import difflib
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from farm.darknet.dialect import Dialect
from farm.darknet.objdata import parse_obj_data, resolve
from farm.errors import BadInput, Finding, FindingsError, Severity

#: darknet's README: about 2000 images per class for a good detector.
MIN_IMAGES_PER_CLASS = 2000
MIN_OBJECT_PX = 4.0
MAX_FINDINGS_PER_RULE = 50

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .ppm .pgm .pbm .tif .tiff .webp".split())
OBJ_DATA_KEYS = ("classes", "train", "valid", "names", "backup", "difficult", "eval",
                 "results", "map", "saveweights", "savelast", "labels")

# Label path rules (darknet.md §8).
_A_DIRS = (("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
           ("/JPEGImages/", "/labels/"), ("/images/train2014/", "/labels/train2014/"),
           ("/images/val2014/", "/labels/val2014/"))
_A_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM",
           ".tiff", ".TIFF")
_P_SUBS = (("images", "labels"), ("JPEGImages", "labels"), ("raw", "labels"),
           (".jpg", ".txt"), (".png", ".txt"), (".JPG", ".txt"), (".JPEG", ".txt"))

_BOM = b"\xef\xbb\xbf"
_READ_CHUNK = 1 << 16
_LIST_BLOCK = 1 << 18  # image lists are read this much at a time


# ---------------------------------------------------------------------------------------
# The report


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
    source: tuple | None = field(default=None, repr=False)  # (list path, _Rules) of lint_list

    @property
    def paths(self) -> dict[str, int]:
        """image → its first line in the list, read again from the list when asked: a
        table of every path made the lint's memory grow with the list (0.3 KB an image)."""
        first: dict[str, int] = {}
        for lineno, _, image in _list_images(*self.source) if self.source else ():
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


class _Findings:
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


# ---------------------------------------------------------------------------------------
# Label paths


def label_path(image: str, dialect: Dialect = Dialect.PJREDDIE) -> str | None:
    """The label file darknet reads for `image`, or None when it cannot derive one."""
    return _LABEL_RULES[Dialect.of(dialect)](image)


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


_LABEL_RULES = {Dialect.PJREDDIE: _pjreddie_label, Dialect.ALEXEYAB: _alexeyab_label,
                Dialect.HANKAI: _hankai_label}


def _sibling_label(image: str) -> str:
    root, _ = os.path.splitext(image)
    return root + ".txt"


def _replacements_note(image: str, derived: str) -> str:
    parts = [f"'{old}'→'{new}'" for old, new in _P_SUBS[:3] if old in image]
    if not parts:
        return ""
    return f" (pjreddie replaced the first {', '.join(parts)} anywhere in the path)"


# ---------------------------------------------------------------------------------------
# Images: header and tail only


def image_problem(path: str) -> str | None:
    """Why OpenCV would fail to read `path` (missing, empty, not an image, truncated),
    judged from its first and last bytes; None when it looks whole."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    try:
        head = os.read(fd, _IMAGE_PEEK)
        if len(head) < _IMAGE_PEEK:  # small file: all of it is in hand
            tail = head[-1024:]
        else:
            size = os.fstat(fd).st_size
            tail = os.pread(fd, 1024, size - 1024)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    finally:
        os.close(fd)
    return _image_bytes_problem(head, tail)


_IMAGE_PEEK = 4096


def _image_bytes_problem(head: bytes, tail: bytes) -> str | None:
    if len(head) < 32:
        return f"only {len(head)} bytes, too small to be an image"
    kind = _image_kind(head)
    if kind is None:
        return f"not an image OpenCV reads (starts with {head[:8].hex(' ')})"
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated JPEG: no end-of-image marker (FF D9) at the end"
    if kind == "png" and b"IEND" not in tail:
        return "truncated PNG: no IEND chunk at the end"
    return None


def _image_kind(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:1] == b"P" and head[1:2] in b"123456":
        return "pnm"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# ---------------------------------------------------------------------------------------
# One list (train.txt / valid.txt)


@dataclass
class _Rules:
    classes: int
    dialect: Dialect
    role: str
    base_dir: str
    fallback_dir: str | None  # tried when an image is not under base_dir
    check_images: bool
    net_size: tuple[int, int] | None
    min_object_px: float


def lint_list(list_path: str | os.PathLike, *, classes: int,
              dialect: Dialect = Dialect.PJREDDIE, role: str = "train",
              base_dir: str | os.PathLike | None = None,
              check_images: bool = True, net_size: tuple[int, int] | None = None,
              min_object_px: float = MIN_OBJECT_PX,
              min_images_per_class: int | None = MIN_IMAGES_PER_CLASS,
              max_findings_per_rule: int = MAX_FINDINGS_PER_RULE) -> LintReport:
    """Lint one image list and every label file it leads darknet to.

    Relative entries are resolved as the farm resolves them when it writes the absolute
    lists darknet gets: against `base_dir` (the folder the user submits from), else, when
    the image is not there, against the list's own folder (the default `base_dir`).
    `net_size` (w, h) enables the tiny-object warning; `min_images_per_class` (None to
    skip) the too-few-images warning, for train lists.
    """
    list_path = os.fspath(list_path)
    if role not in ("train", "valid"):
        raise BadInput(f"role={role!r}: use 'train' or 'valid'")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise BadInput(f"classes={classes!r} must be an integer ≥ 1")
    list_dir = os.path.dirname(os.path.abspath(list_path))
    base = os.path.abspath(base_dir) if base_dir is not None else list_dir
    rules = _Rules(classes, Dialect.of(dialect), role, base,
                   list_dir if list_dir != base else None, check_images, net_size,
                   float(min_object_px))
    report = LintReport()
    out = _Findings(max_findings_per_rule)
    if _check_list(list_path, out):
        report.source = (list_path, rules)
        _lint_entries(list_path, rules, report, out)
        _summarise(list_path, rules, report, out, min_images_per_class)
    report.findings = out.done(list_path)
    return report


def _check_list(list_path: str, out: _Findings) -> bool:
    """Whether there are lines to lint: the list exists, opens and holds more than
    whitespace. A BOM is reported here; _list_lines drops it."""
    try:
        with open(list_path, "rb") as f:
            data = f.read(len(_BOM))
            if data == _BOM:
                out.add("list.bom", list_path, 1, "the list starts with a byte-order mark "
                        "(BOM): darknet takes it as part of the first image's path ('Cannot "
                        "load image')", "save the list as UTF-8 without BOM")
                data = b""
            while not data.strip():
                data = f.read(_LIST_BLOCK)
                if not data:
                    out.add("list.empty", list_path, None, "the list holds no images",
                            "list one image path per line")
                    return False
    except FileNotFoundError:
        out.add("list.missing", list_path, None, "the image list does not exist",
                "check the train=/valid= path in obj.data")
        return False
    except OSError as e:
        out.add("list.unreadable", list_path, None, f"cannot read the image list "
                f"({e.strerror})", "check its permissions")
        return False
    return True


def _list_lines(list_path: str) -> Iterator[str]:
    """The list's lines without a BOM or the final newline, read block by block: the whole
    text and its split copy held most of the lint's memory on a long list."""
    with open(list_path, "rb") as f:
        rest = f.read(len(_BOM))
        if rest == _BOM:
            rest = b""
        while block := f.read(_LIST_BLOCK):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                lines = block[:cut].decode("utf-8", errors="surrogateescape").split("\n")
                lines.pop()
                yield from lines
        if rest:
            yield rest.decode("utf-8", errors="surrogateescape")


def _list_images(list_path: str, rules: _Rules) -> Iterator[tuple[int, str, str]]:
    """(line, entry, image) of each image entry, resolved by the code _lint_entries uses,
    findings dropped: the second pass that names the lines behind repeated digests."""
    quiet, scratch = _Findings(0), LintReport()
    may_fall_back = rules.check_images and rules.fallback_dir
    for lineno, entry in enumerate(_list_lines(list_path), 1):
        if entry[-1:] == "\r":
            entry = entry[:-1]
        image = _entry_image(list_path, lineno, entry, rules, scratch, quiet)
        if image is None:
            continue
        if may_fall_back and not os.path.isabs(entry.strip()) \
                and image_problem(image) == "missing":
            image = _fallback(entry, image, rules)[0]
        yield lineno, entry, image


def _read_bytes(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_CHUNK)
        return data + _read_rest(fd) if len(data) == _READ_CHUNK else data
    finally:
        os.close(fd)


def _lint_entries(list_path: str, rules: _Rules, report: LintReport,
                  out: _Findings) -> None:
    """The hot loop: one pass over the list, every check inline for a good entry, a helper
    (which writes the finding) only when something is wrong. Memory stays flat in the
    list's length: lines are streamed, and each image leaves only its digest behind."""
    derive = _LABEL_RULES[rules.dialect]
    check_images, digest = rules.check_images, report.digests.append
    crlf = first_crlf = 0
    missing_hint: list[str | None] = []
    batch = _LabelBatch(rules, report, out)
    for lineno, entry in enumerate(_list_lines(list_path), 1):
        if entry[-1:] == "\r":
            entry = entry[:-1]
            crlf += 1
            first_crlf = first_crlf or lineno
        image = _entry_image(list_path, lineno, entry, rules, report, out)
        if image is None:
            continue
        problem = image_problem(image) if check_images else None
        if problem == "missing" and rules.fallback_dir and not os.path.isabs(entry.strip()):
            image, problem = _fallback(entry, image, rules)
        digest(hash(image))
        if problem:
            _report_image(list_path, lineno, entry, image, problem, rules, out,
                          missing_hint)
            if problem == "missing":
                continue
        label = derive(image)
        if label is None:
            _report_no_rule(list_path, lineno, image, rules, out)
            continue
        try:
            fd = os.open(label, os.O_RDONLY)
        except FileNotFoundError:
            _report_missing_label(list_path, lineno, image, label, rules, out)
            continue
        except OSError as e:
            out.add("label.unreadable", label, None, f"cannot read label file "
                    f"({e.strerror})", "check its permissions")
            continue
        try:
            data = os.read(fd, _READ_CHUNK)
            if len(data) == _READ_CHUNK:
                data += _read_rest(fd)
        finally:
            os.close(fd)
        report.labels += 1
        if not batch.offer(label, data):
            _parse_label(label, data, rules, report, out)
    batch.flush()
    _report_duplicates(list_path, rules, report.digests, out)
    if crlf:
        _report_crlf_list(list_path, first_crlf, crlf, rules, out)


def _entry_image(list_path: str, lineno: int, entry: str, rules: _Rules,
                 report: LintReport, out: _Findings) -> str | None:
    """The image path of a list line (counted in report.images), or None with a finding."""
    dot = entry.rfind(".")
    if (not entry or entry[0] in " \t" or entry[-1] in " \t"
            or entry[dot:].lower() not in IMAGE_EXTENSIONS or entry.rfind("/") > dot):
        return _check_entry(list_path, lineno, entry, rules, report, out)
    report.images += 1
    if entry[0] == "/" and "/." not in entry and "//" not in entry:
        return entry
    return os.path.normpath(os.path.join(rules.base_dir, entry))


def _repeated(*digest_arrays: array) -> set[int]:
    """Digests found more than once within one array, or (given two) in both."""
    views = [np.frombuffer(d, np.int64) if len(d) else np.empty(0, np.int64)
             for d in digest_arrays]
    if len(views) == 2:
        return set(np.intersect1d(*views).tolist())
    ordered = np.sort(views[0])
    return set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())


def _report_duplicates(list_path: str, rules: _Rules, digests: array,
                       out: _Findings) -> None:
    """Every line naming an image an earlier line names. Only digests that repeat send the
    lint over the list a second time, and only their images are kept while it looks."""
    repeated = _repeated(digests)
    if not repeated:
        return
    first: dict[str, int] = {}
    for lineno, entry, image in _list_images(list_path, rules):
        if hash(image) in repeated:
            seen = first.setdefault(image, lineno)
            if seen != lineno:
                _report_duplicate(list_path, lineno, entry, seen, out)


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _READ_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _check_entry(list_path: str, lineno: int, entry: str, rules: _Rules,
                 report: LintReport, out: _Findings) -> str | None:
    """The absolute image path of a list line, or None (with a finding) if it is not one."""
    if not entry.strip():
        out.add("list.blank", list_path, lineno, "blank line: darknet reads it as an image "
                "named '' ('Cannot load image \"\"', and in mAP 'Label file name is too "
                "short'), which skews the mAP (seed ds4)", f"delete line {lineno}")
        return None
    if entry != entry.strip():
        out.add("list.spaces", list_path, lineno, f"{entry!r} has leading or trailing "
                "spaces, which darknet keeps as part of the file name",
                "remove the spaces around the path")
        entry = entry.strip()
    ext = os.path.splitext(entry)[1].lower()
    if ext == ".txt":
        out.add("list.txt_entry", list_path, lineno, f"{entry} is a label file, not an "
                "image: darknet tries to load it as one ('Cannot load image', seed ds2)",
                f"delete line {lineno}; list only image files")
        return None
    if ext not in IMAGE_EXTENSIONS:
        out.add("list.not_image", list_path, lineno, f"{entry} does not have an image "
                f"extension ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                "list only image files, one per line")
        return None
    report.images += 1
    return os.path.normpath(os.path.join(rules.base_dir, entry))


def _fallback(entry: str, image: str, rules: _Rules) -> tuple[str, str | None]:
    """The image under the list's own folder when it is not under base_dir."""
    alt = os.path.normpath(os.path.join(rules.fallback_dir, entry.strip()))
    problem = image_problem(alt)
    return (image, "missing") if problem == "missing" else (alt, problem)


def _report_duplicate(list_path: str, lineno: int, entry: str, first: int,
                      out: _Findings) -> None:
    out.add("list.duplicate", list_path, lineno, f"{entry} is listed twice (first at "
            f"line {first}): it counts double in training and in mAP",
            f"delete line {lineno}")


def _report_image(list_path: str, lineno: int, entry: str, image: str, problem: str,
                  rules: _Rules, out: _Findings, hint_cache: list) -> None:
    if problem == "missing":
        if not hint_cache:
            hint_cache.append(_base_dir_hint(entry, rules.base_dir))
        hint = hint_cache[0] or "fix the path or remove the line"
        out.add("image.missing", list_path, lineno, f"image {image} does not exist", hint)
    else:
        out.add("image.bad", list_path, lineno, f"image {image}: {problem}; OpenCV cannot "
                "load it and darknet skips it ('Cannot load image')",
                "re-export the image or remove the line")


def _base_dir_hint(entry: str, base_dir: str) -> str | None:
    """Relative list entries are relative to darknet's working folder, often not the
    list's; say where they do exist (seed: './ds2/x.jpg' in ds2/train.txt)."""
    if os.path.isabs(entry):
        return None
    for candidate in (os.path.dirname(base_dir), os.getcwd()):
        if os.path.exists(os.path.join(candidate, entry)):
            return (f"relative paths resolve from {candidate}, not {base_dir}: darknet "
                    "opens them from its working folder; pass base_dir="
                    f"{candidate} (or write absolute paths)")
    return None


def _report_crlf_list(list_path: str, first: int, crlf: int, rules: _Rules,
                      out: _Findings) -> None:
    if rules.dialect is Dialect.PJREDDIE:
        out.add("list.crlf", list_path, first, f"Windows (CRLF) line endings on {crlf} "
                "lines: pjreddie's darknet keeps the '\\r' in each path ('Cannot load image', "
                "then 'Couldn't open file: …txt\\r' and a crash)",
                "convert the list to LF line endings (dos2unix)")
    else:
        out.add("list.crlf", list_path, first, f"Windows (CRLF) line endings on {crlf} "
                "lines (this darknet strips the '\\r', pjreddie's does not)",
                "convert the list to LF line endings (dos2unix)", Severity.WARNING)


# ---------------------------------------------------------------------------------------
# Label files


def _report_no_rule(list_path: str, lineno: int, image: str, rules: _Rules,
                    out: _Findings) -> None:
    out.add("label.no_rule", list_path, lineno, f"{rules.dialect} cannot derive a label "
            f"path from {image}: its extension is not one it replaces with .txt, so it "
            "reads the image itself as the label file", "convert the image to .jpg or .png")


_MISSING_LABEL_EFFECT = {
    Dialect.PJREDDIE: "pjreddie stops training ('Couldn't open file', exit code 0)",
    Dialect.ALEXEYAB: "AlexeyAB trains on it as a background-only image ('Can't open label "
                      "file')",
    Dialect.HANKAI: "hank-ai aborts ('failed to open annotation file')"}


def _report_missing_label(list_path: str, lineno: int, image: str, label: str,
                          rules: _Rules, out: _Findings) -> None:
    sibling = _sibling_label(image)
    effect = _MISSING_LABEL_EFFECT[rules.dialect]
    if sibling != label and os.path.exists(sibling):
        out.add("label.elsewhere", list_path, lineno, f"{rules.dialect} reads the labels of "
                f"{image} from {label}{_replacements_note(image, label)}, which does not "
                f"exist; the label is next to the image at {sibling}; {effect}",
                f"put the label files at the path {rules.dialect} derives (move {sibling} "
                f"to {label}), or train with a dialect that reads labels next to images")
        return
    out.add("label.missing", list_path, lineno, f"no label file for {image}: {label} does "
            f"not exist{_replacements_note(image, label)}; {effect}",
            "write the label file (an empty one for an image with no objects) or remove "
            "the image from the list")


class _LabelBatch:
    """Label files that are plainly well-formed (no BOM, no CR, no blank line, five fields
    on every line) are checked together with numpy, a few thousand at a time: parsing
    them one float() at a time was most of the lint's time. A file with any value that
    fails a check goes back through _parse_label, which reports it line by line."""

    SIZE = 4096

    def __init__(self, rules: _Rules, report: LintReport, out: _Findings):
        self.rules, self.report, self.out = rules, report, out
        self.labels: list[str] = []
        self.datas: list[bytes] = []
        self.rows: list[int] = []
        self.tokens: list[bytes] = []

    def offer(self, label: str, data: bytes) -> bool:
        """Take the file if it is plainly well-formed; False: parse it line by line."""
        if data[:3] == _BOM or b"\r" in data or b"\n\n" in data or data[:1] == b"\n":
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
            _parse_label(self.labels[i], self.datas[i], self.rules, self.report, self.out)
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


def _parse_label(label: str, data: bytes, rules: _Rules, report: LintReport,
                 out: _Findings) -> None:
    """Count the boxes of one label file; a line that fails the quick test goes to
    _check_box, which says what is wrong with it."""
    if data[:3] == _BOM or b"\r" in data:
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


def _strip_bom_crlf(label: str, data: bytes, out: _Findings) -> bytes:
    if data[:3] == _BOM:
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
                     out: _Findings) -> list[int]:
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


def _check_box(label: str, n: int, fields: list[bytes], rules: _Rules,
               out: _Findings) -> int | None:
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


def _check_box_size(label: str, n: int, w: float, h: float, rules: _Rules,
                    out: _Findings) -> None:
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


def _summarise(list_path: str, rules: _Rules, report: LintReport, out: _Findings,
               min_images_per_class: int | None) -> None:
    if report.negatives:
        out.add("list.negatives", list_path, None, f"{report.negatives} of {report.images} "
                "images have empty label files and count as negatives (background only)",
                "fine for hard negatives; check that none of them should have boxes",
                Severity.WARNING)
    if rules.role != "train" or not min_images_per_class or report.images == 0:
        return
    for c in range(rules.classes):
        have = report.class_images.get(c, 0)
        if have < min_images_per_class:
            out.add("list.few_images", list_path, None, f"class {c} appears in {have} "
                    f"training images; darknet's guidance is about {min_images_per_class} "
                    "per class", "add more varied images of this class", Severity.WARNING)


# ---------------------------------------------------------------------------------------
# obj.data


def lint_obj_data(obj_data_path: str | os.PathLike, *, classes: int | None = None,
                  dialect: Dialect = Dialect.PJREDDIE,
                  base_dir: str | os.PathLike | None = None, check_images: bool = True,
                  net_size: tuple[int, int] | None = None,
                  min_object_px: float = MIN_OBJECT_PX,
                  min_images_per_class: int | None = MIN_IMAGES_PER_CLASS,
                  max_findings_per_rule: int = MAX_FINDINGS_PER_RULE) -> LintReport:
    """Lint obj.data, its names file and its train/valid lists with their labels.

    Relative paths are resolved as the farm resolves them when it hands darknet absolute
    ones: against `base_dir` (the folder the user submits from), else against the folder
    of the file that names them (obj.data's for its values, a list's for its images).
    `classes` is the cfg's (darknet trains with the cfg's last [yolo]); without it,
    obj.data's `classes=` is used.
    """
    path = os.fspath(obj_data_path)
    data_dir = os.path.dirname(os.path.abspath(path))
    base = os.path.abspath(base_dir) if base_dir is not None else data_dir
    report = LintReport()
    found: list[Finding] = []
    values = _read_obj_data(path, found)
    if values is None:
        report.findings = found
        return report
    n_classes = _classes(path, values, classes, found)
    _check_names(path, values, base, data_dir, n_classes, found)
    _check_backup(path, values, base, data_dir, found)
    if n_classes is None:
        report.findings = found
        return report
    lists = {role: resolve(values[role][0], base, data_dir) for role in ("train", "valid")
             if role in values}
    if "train" not in lists:
        found.append(Finding(path, None, "obj.data has no train= line",
                             "add train = <path of the training image list>"))
    if "valid" not in values:
        found.append(Finding(path, None, "obj.data has no valid= line: AlexeyAB's -map falls "
                             "back to the training list (mAP on images it learned)",
                             "add valid = <path of a validation list>", Severity.WARNING))
    for role, list_path in list(lists.items()):
        if not os.path.exists(list_path):
            hint = _base_dir_hint(values[role][0], base)
            found.append(Finding(path, values[role][1], f"{role} list {list_path} does not "
                                 "exist", hint or f"fix the {role}= path"))
            del lists[role]
    reports = {}
    for role, list_path in lists.items():
        reports[role] = lint_list(list_path, classes=n_classes, dialect=dialect, role=role,
                                  base_dir=base, check_images=check_images, net_size=net_size,
                                  min_object_px=min_object_px,
                                  min_images_per_class=min_images_per_class,
                                  max_findings_per_rule=max_findings_per_rule)
        report.merge(reports[role])
    if "train" in reports and "valid" in reports and lists["train"] != lists["valid"]:
        found += _overlap(lists, reports, max_findings_per_rule)
    report.findings = found + report.findings
    return report


def _read_obj_data(path: str, found: list[Finding]) -> dict[str, tuple[str, int]] | None:
    """key -> (value, line), read as darknet does; bad and unknown lines become findings."""
    try:
        text = _read_bytes(path).decode("utf-8", errors="replace")
    except OSError as e:
        found.append(Finding(path, None, f"cannot read obj.data ({e.strerror})",
                             "check the path"))
        return None
    values, bad = parse_obj_data(text)
    for n, raw in bad:
        found.append(Finding(path, n, f"{raw!r} is not key=value ('Config file "
                             "error line')", "write key = value"))
    for key, (_, n) in values.items():
        if key not in OBJ_DATA_KEYS:
            close = difflib.get_close_matches(key, OBJ_DATA_KEYS, n=1)
            found.append(Finding(path, n, f"obj.data key {key!r} is not one darknet reads",
                                 f"did you mean {close[0]}?" if close else "delete the line",
                                 Severity.WARNING))
    return values


def _classes(path: str, values: dict, classes: int | None, found: list[Finding]) -> int | None:
    declared = values.get("classes")
    n = None
    if declared is not None:
        try:
            n = int(declared[0])
        except ValueError:
            found.append(Finding(path, declared[1], f"classes={declared[0]} is not an integer",
                                 "write classes = <number of classes>"))
    if classes is not None:
        if n is not None and n != classes:
            found.append(Finding(path, declared[1], f"classes={n} here but the cfg trains "
                                 f"{classes} classes (darknet takes them from the cfg's last "
                                 "[yolo]; calc_anchors and demo read this one)",
                                 f"set classes = {classes}"))
        return classes
    if n is None:
        found.append(Finding(path, None, "the number of classes is unknown: no classes= in "
                             "obj.data and no cfg given", "add classes = N to obj.data"))
    elif n < 1:
        found.append(Finding(path, declared[1], f"classes={n} must be at least 1",
                             "set classes = N"))
        return None
    return n


def _check_names(path: str, values: dict, base: str, data_dir: str, classes: int | None,
                 found: list[Finding]) -> None:
    if "names" not in values:
        found.append(Finding(path, None, "obj.data has no names= line: darknet falls back "
                             "to data/names.list", "add names = <path of obj.names>"))
        return
    names_path = resolve(values["names"][0], base, data_dir)
    try:
        text = _read_bytes(names_path).decode("utf-8", errors="replace")
    except OSError as e:
        found.append(Finding(path, values["names"][1], f"cannot read names file {names_path} "
                             f"({e.strerror})", "fix the names= path"))
        return
    names = text.split("\n")
    if names and names[-1] == "":
        names.pop()
    for n, name in enumerate(names, 1):
        if not name.strip():
            found.append(Finding(names_path, n, "blank line: darknet counts it as a class "
                                 "name", f"delete line {n}"))
    if classes is not None and len(names) != classes:
        found.append(Finding(names_path, None, f"{len(names)} names for classes={classes}: "
                             "AlexeyAB's detector map refuses the mismatch and labels are "
                             "shown with the wrong names", f"list exactly {classes} names, "
                             "one per line"))


def _check_backup(path: str, values: dict, base: str, data_dir: str,
                  found: list[Finding]) -> None:
    if "backup" not in values:
        return
    backup = resolve(values["backup"][0], base, data_dir)
    if not os.path.isdir(backup):
        found.append(Finding(path, values["backup"][1], f"backup folder {backup} does not "
                             "exist: darknet fails at its first save ('Couldn't open file')",
                             "create the folder (the farm uses a backup folder per run)",
                             Severity.WARNING))


def _overlap(lists: dict[str, str], reports: dict[str, LintReport], cap: int) -> list[Finding]:
    """Valid images also in the train list, by their first lines in each; the lists are
    read again only when some digest is in both."""
    common = _repeated(reports["train"].digests, reports["valid"].digests)
    if not common:
        return []
    train: dict[str, int] = {}
    valid: dict[str, int] = {}
    for lines, report in ((train, reports["train"]), (valid, reports["valid"])):
        for lineno, _, image in _list_images(*report.source):
            if hash(image) in common:
                lines.setdefault(image, lineno)
    both = sorted((line, p) for p, line in valid.items() if p in train)
    found = [Finding(lists["valid"], line, f"{p} is also in the training list (line "
                     f"{train[p]}): its mAP measures memory, not detection",
                     "keep every image in one list only") for line, p in both[:cap]]
    if len(both) > cap:
        found.append(Finding(lists["valid"], None, f"… and {len(both) - cap} more images in "
                             "both lists", "keep every image in one list only"))
    return found


# ---------------------------------------------------------------------------------------
# Boxes for calc_anchors


def box_sizes(list_path: str | os.PathLike, *, dialect: Dialect = Dialect.PJREDDIE,
              base_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, int]:
    """((w, h) of every valid box as fractions of its image, number of images) for the
    labels of an image list: what calc_anchors clusters."""
    list_path = os.fspath(list_path)
    list_dir = os.path.dirname(os.path.abspath(list_path))
    base = os.path.abspath(base_dir) if base_dir is not None else list_dir
    derive = _LABEL_RULES[Dialect.of(dialect)]
    try:
        text = _read_bytes(list_path).decode("utf-8", errors="surrogateescape")
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
        data = _read_bytes(label) if label else b""
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


def train_list(obj_data_path: str | os.PathLike,
               base_dir: str | os.PathLike | None = None) -> str:
    """The absolute path of obj.data's `train=` list (relative to `base_dir`, else to the
    obj.data's folder)."""
    path = os.fspath(obj_data_path)
    found: list[Finding] = []
    values = _read_obj_data(path, found)
    if values is None or "train" not in values:
        raise BadInput("obj.data has no readable train= line", path=path,
                       hint="add train = <path of the training image list>")
    data_dir = os.path.dirname(os.path.abspath(path))
    base = os.path.abspath(base_dir) if base_dir is not None else data_dir
    return resolve(values["train"][0], base, data_dir)
