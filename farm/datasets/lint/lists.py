"""One image list (train.txt / valid.txt) and every label file it leads darknet to."""
from __future__ import annotations

import os
from array import array
from functools import partial
from typing import Iterator

import numpy as np

from farm.darknet.dialect import Dialect
from farm.datasets.lint.images import IMAGE_EXTENSIONS, image_problem
from farm.datasets.lint.labelpaths import LABEL_RULES, replacements_note, sibling_label
from farm.datasets.lint.labels import LabelBatch, parse_label
from farm.datasets.lint.raw import BOM, LIST_BLOCK, READ_CHUNK, read_rest
from farm.datasets.lint.report import (MAX_FINDINGS_PER_RULE, Findings, LintReport,
                                       Rules)
from farm.errors import BadInput, Severity

#: darknet's README: about 2000 images per class for a good detector.
MIN_IMAGES_PER_CLASS = 2000
MIN_OBJECT_PX = 4.0


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
    rules = Rules(classes, Dialect.of(dialect), role, base,
                   list_dir if list_dir != base else None, check_images, net_size,
                   float(min_object_px))
    report = LintReport()
    out = Findings(max_findings_per_rule)
    if _check_list(list_path, out):
        report.source = partial(list_images, list_path, rules)
        _lint_entries(list_path, rules, report, out)
        _summarise(list_path, rules, report, out, min_images_per_class)
    report.findings = out.done(list_path)
    return report


def _check_list(list_path: str, out: Findings) -> bool:
    """Whether there are lines to lint: the list exists, opens and holds more than
    whitespace. A BOM is reported here; _list_lines drops it."""
    try:
        with open(list_path, "rb") as f:
            data = f.read(len(BOM))
            if data == BOM:
                out.add("list.bom", list_path, 1, "the list starts with a byte-order mark "
                        "(BOM): darknet takes it as part of the first image's path ('Cannot "
                        "load image')", "save the list as UTF-8 without BOM")
                data = b""
            while not data.strip():
                data = f.read(LIST_BLOCK)
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
        rest = f.read(len(BOM))
        if rest == BOM:
            rest = b""
        while block := f.read(LIST_BLOCK):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                lines = block[:cut].decode("utf-8", errors="surrogateescape").split("\n")
                lines.pop()
                yield from lines
        if rest:
            yield rest.decode("utf-8", errors="surrogateescape")


def list_images(list_path: str, rules: Rules) -> Iterator[tuple[int, str, str]]:
    """(line, entry, image) of each image entry, resolved by the code _lint_entries uses,
    findings dropped: the second pass that names the lines behind repeated digests."""
    quiet, scratch = Findings(0), LintReport()
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


def _lint_entries(list_path: str, rules: Rules, report: LintReport,
                  out: Findings) -> None:
    """The hot loop: one pass over the list, every check inline for a good entry, a helper
    (which writes the finding) only when something is wrong. Memory stays flat in the
    list's length: lines are streamed, and each image leaves only its digest behind."""
    derive = LABEL_RULES[rules.dialect]
    check_images, digest = rules.check_images, report.digests.append
    crlf = first_crlf = 0
    missing_hint: list[str | None] = []
    batch = LabelBatch(rules, report, out)
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
            data = os.read(fd, READ_CHUNK)
            if len(data) == READ_CHUNK:
                data += read_rest(fd)
        finally:
            os.close(fd)
        report.labels += 1
        if not batch.offer(label, data):
            parse_label(label, data, rules, report, out)
    batch.flush()
    _report_duplicates(list_path, rules, report.digests, out)
    if crlf:
        _report_crlf_list(list_path, first_crlf, crlf, rules, out)


def _entry_image(list_path: str, lineno: int, entry: str, rules: Rules,
                 report: LintReport, out: Findings) -> str | None:
    """The image path of a list line (counted in report.images), or None with a finding."""
    dot = entry.rfind(".")
    if (not entry or entry[0] in " \t" or entry[-1] in " \t"
            or entry[dot:].lower() not in IMAGE_EXTENSIONS or entry.rfind("/") > dot):
        return _check_entry(list_path, lineno, entry, rules, report, out)
    report.images += 1
    if entry[0] == "/" and "/." not in entry and "//" not in entry:
        return entry
    return os.path.normpath(os.path.join(rules.base_dir, entry))


def repeated(*digest_arrays: array) -> set[int]:
    """Digests found more than once within one array, or (given two) in both."""
    views = [np.frombuffer(d, np.int64) if len(d) else np.empty(0, np.int64)
             for d in digest_arrays]
    if len(views) == 2:
        return set(np.intersect1d(*views).tolist())
    ordered = np.sort(views[0])
    return set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())


def _report_duplicates(list_path: str, rules: Rules, digests: array,
                       out: Findings) -> None:
    """Every line naming an image an earlier line names. Only digests that repeat send the
    lint over the list a second time, and only their images are kept while it looks."""
    twice = repeated(digests)
    if not twice:
        return
    first: dict[str, int] = {}
    for lineno, entry, image in list_images(list_path, rules):
        if hash(image) in twice:
            seen = first.setdefault(image, lineno)
            if seen != lineno:
                _report_duplicate(list_path, lineno, entry, seen, out)


def _check_entry(list_path: str, lineno: int, entry: str, rules: Rules,
                 report: LintReport, out: Findings) -> str | None:
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


def _fallback(entry: str, image: str, rules: Rules) -> tuple[str, str | None]:
    """The image under the list's own folder when it is not under base_dir."""
    alt = os.path.normpath(os.path.join(rules.fallback_dir, entry.strip()))
    problem = image_problem(alt)
    return (image, "missing") if problem == "missing" else (alt, problem)


def _report_duplicate(list_path: str, lineno: int, entry: str, first: int,
                      out: Findings) -> None:
    out.add("list.duplicate", list_path, lineno, f"{entry} is listed twice (first at "
            f"line {first}): it counts double in training and in mAP",
            f"delete line {lineno}")


def _report_image(list_path: str, lineno: int, entry: str, image: str, problem: str,
                  rules: Rules, out: Findings, hint_cache: list) -> None:
    if problem == "missing":
        if not hint_cache:
            hint_cache.append(base_dir_hint(entry, rules.base_dir))
        hint = hint_cache[0] or "fix the path or remove the line"
        out.add("image.missing", list_path, lineno, f"image {image} does not exist", hint)
    else:
        out.add("image.bad", list_path, lineno, f"image {image}: {problem}; OpenCV cannot "
                "load it and darknet skips it ('Cannot load image')",
                "re-export the image or remove the line")


def base_dir_hint(entry: str, base_dir: str) -> str | None:
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


def _report_crlf_list(list_path: str, first: int, crlf: int, rules: Rules,
                      out: Findings) -> None:
    if rules.dialect is Dialect.PJREDDIE:
        out.add("list.crlf", list_path, first, f"Windows (CRLF) line endings on {crlf} "
                "lines: pjreddie's darknet keeps the '\\r' in each path ('Cannot load image', "
                "then 'Couldn't open file: …txt\\r' and a crash)",
                "convert the list to LF line endings (dos2unix)")
    else:
        out.add("list.crlf", list_path, first, f"Windows (CRLF) line endings on {crlf} "
                "lines (this darknet strips the '\\r', pjreddie's does not)",
                "convert the list to LF line endings (dos2unix)", Severity.WARNING)


def _report_no_rule(list_path: str, lineno: int, image: str, rules: Rules,
                    out: Findings) -> None:
    out.add("label.no_rule", list_path, lineno, f"{rules.dialect} cannot derive a label "
            f"path from {image}: its extension is not one it replaces with .txt, so it "
            "reads the image itself as the label file", "convert the image to .jpg or .png")


_MISSING_LABEL_EFFECT = {
    Dialect.PJREDDIE: "pjreddie stops training ('Couldn't open file', exit code 0)",
    Dialect.ALEXEYAB: "AlexeyAB trains on it as a background-only image ('Can't open label "
                      "file')",
    Dialect.HANKAI: "hank-ai aborts ('failed to open annotation file')"}


def _report_missing_label(list_path: str, lineno: int, image: str, label: str,
                          rules: Rules, out: Findings) -> None:
    sibling = sibling_label(image)
    effect = _MISSING_LABEL_EFFECT[rules.dialect]
    if sibling != label and os.path.exists(sibling):
        out.add("label.elsewhere", list_path, lineno, f"{rules.dialect} reads the labels of "
                f"{image} from {label}{replacements_note(image, label)}, which does not "
                f"exist; the label is next to the image at {sibling}; {effect}",
                f"put the label files at the path {rules.dialect} derives (move {sibling} "
                f"to {label}), or train with a dialect that reads labels next to images")
        return
    out.add("label.missing", list_path, lineno, f"no label file for {image}: {label} does "
            f"not exist{replacements_note(image, label)}; {effect}",
            "write the label file (an empty one for an image with no objects) or remove "
            "the image from the list")

def _summarise(list_path: str, rules: Rules, report: LintReport, out: Findings,
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
