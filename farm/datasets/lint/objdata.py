"""obj.data: its keys, its names file and backup folder, its lists, and the images the
train and valid lists share."""
from __future__ import annotations

import difflib
import os

from farm.darknet.dialect import Dialect
from farm.darknet.objdata import parse_obj_data, resolve
from farm.datasets.lint.lists import (MIN_IMAGES_PER_CLASS, MIN_OBJECT_PX, base_dir_hint,
                                      lint_list, repeated)
from farm.datasets.lint.raw import read_bytes
from farm.datasets.lint.report import MAX_FINDINGS_PER_RULE, LintReport
from farm.errors import BadInput, Finding, Severity

OBJ_DATA_KEYS = ("classes", "train", "valid", "names", "backup", "difficult", "eval",
                 "results", "map", "saveweights", "savelast", "labels")


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
            hint = base_dir_hint(values[role][0], base)
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
        text = read_bytes(path).decode("utf-8", errors="replace")
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
        text = read_bytes(names_path).decode("utf-8", errors="replace")
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
    common = repeated(reports["train"].digests, reports["valid"].digests)
    if not common:
        return []
    train: dict[str, int] = {}
    valid: dict[str, int] = {}
    for lines, report in ((train, reports["train"]), (valid, reports["valid"])):
        for lineno, _, image in report.source():
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
