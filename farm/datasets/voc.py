"""labelImg's Pascal-VOC XML to YOLO txt, with every doubt reported instead of guessed.

Why: the user labelled screenshots with labelImg on one machine and converted them with
a script on another (seed, "imglabeling"); a box drawn past the edge, a class typed
differently or an image that never got its XML went silently into training. Here each
such case is a `Finding` with the file, the line (the parser's line for a broken XML)
and what to do; with `strict` (the default) nothing is written until all are fixed.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import cv2

from farm.errors import BadInput, Finding, FindingsError, Severity

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class VocBox:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    line: int  # line of the <object> element


@dataclass(frozen=True)
class VocAnnotation:
    path: str
    filename: str | None
    width: int | None  # from <size>; None when absent or 0
    height: int | None
    boxes: tuple[VocBox, ...]
    size_line: int | None = None


@dataclass
class VocReport:
    """What an import did: files written and every finding, errors first in the listing."""

    converted: int = 0
    objects: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is not Severity.ERROR]


def read_names(path: str | os.PathLike) -> list[str]:
    """Class names from obj.names (one per line; a trailing blank line is fine)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the class names: {e}", path=str(p),
                       hint="give the obj.names file, one class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [ln.strip() for ln in lines]
    for n, name in enumerate(names, 1):
        if not name:
            raise BadInput("blank line inside obj.names: darknet would count it as a class",
                           path=str(p), line=n, hint="delete the blank line")
    if not names:
        raise BadInput("obj.names holds no class names", path=str(p),
                       hint="write one class name per line, e.g. close")
    return names


def import_voc(xml_dir: str | os.PathLike, names: str | os.PathLike | list[str],
               out_dir: str | os.PathLike, *, image_dir: str | os.PathLike | None = None,
               strict: bool = True) -> VocReport:
    """Convert a labelImg folder into out_dir/images + out_dir/labels (+ obj.names).

    Images are matched to XML files by relative path and stem (labelImg's layout), else
    by the XML's <filename>. strict: raise FindingsError and write nothing when any error
    was found; otherwise convert the clean files and report the rest.
    """
    xml_root, img_root = Path(xml_dir), Path(image_dir or xml_dir)
    for d in (xml_root, img_root):
        if not d.is_dir():
            raise BadInput("folder does not exist", path=str(d), hint="check the path")
    classes = names if isinstance(names, list) else read_names(names)
    report = VocReport()
    images = {_stem(p, img_root): p for p in _walk(img_root, IMAGE_EXTS)}
    xmls = list(_walk(xml_root, (".xml",)))
    if not xmls:
        raise BadInput("no .xml annotation files found", path=str(xml_root),
                       hint="point at the folder labelImg saved Pascal-VOC files into")
    planned: list[tuple[Path, str]] = []
    matched: set[Path] = set()
    for xml in xmls:
        converted = _convert_one(xml, _stem(xml, xml_root), img_root, images, classes, report)
        if converted:
            planned.append(converted)
            matched.add(converted[0])
    for image in images.values():
        if image not in matched and not _has_xml(image, img_root, xml_root):
            report.findings.append(Finding(
                str(image), None, "image has no annotation XML",
                "label it in labelImg (save with no boxes if it has no mark) or remove it"))
    report.findings.sort(key=lambda f: (f.severity is not Severity.ERROR, f.path, f.line or 0))
    if strict and report.errors:
        raise FindingsError(report.findings, what="labelImg annotations")
    _write(planned, img_root, Path(out_dir), classes, report)
    return report


def parse_voc(path: str | os.PathLike) -> VocAnnotation:
    """Read one Pascal-VOC file; a broken one raises BadInput with the parser's line."""
    root = _parse_xml(Path(path))
    if root.tag != "annotation":
        raise BadInput(f"root element is <{root.tag}>, not <annotation>", path=str(path),
                       line=root.line, hint="this is not a labelImg Pascal-VOC file")
    size = root.find("size")
    width = _int(size.find("width"), path) if size is not None else None
    height = _int(size.find("height"), path) if size is not None else None
    boxes = []
    for obj in root.find_all("object"):
        name = obj.find("name")
        bnd = obj.find("bndbox")
        if name is None or bnd is None:
            raise BadInput("<object> without <name> or <bndbox>", path=str(path), line=obj.line,
                           hint="redraw the box in labelImg and save again")
        boxes.append(VocBox(name.text.strip(), *(_float(bnd.find(k), path, bnd) for k in
                                                  ("xmin", "ymin", "xmax", "ymax")), obj.line))
    filename = root.find("filename")
    return VocAnnotation(str(path), filename.text.strip() if filename is not None else None,
                         width or None, height or None, tuple(boxes),
                         size.line if size is not None else None)


def yolo_from_voc(box: VocBox, class_id: int, width: int, height: int) -> str:
    """labelImg's own conversion: centre and size over the image size, 6 decimals."""
    cx = (box.xmin + box.xmax) / 2 / width
    cy = (box.ymin + box.ymax) / 2 / height
    w = (box.xmax - box.xmin) / width
    h = (box.ymax - box.ymin) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"


# --------------------------------------------------------------------------- internals

def _convert_one(xml: Path, stem: str, img_root: Path, images: dict, classes: list[str],
                 report: VocReport):
    try:
        ann = parse_voc(xml)
    except BadInput as e:
        report.findings.append(Finding(str(xml), e.line, e.reason,
                                       e.hint or "fix the XML or relabel the image"))
        return None
    image = images.get(stem) or _by_filename(xml, ann, img_root)
    if image is None:
        report.findings.append(Finding(
            str(xml), None, f"no image for this annotation (looked for {stem}.* under "
            f"{img_root} and <filename>{ann.filename}</filename>)",
            "put the image beside the XML or pass the image folder; or delete the XML"))
        return None
    img = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    if img is None:
        report.findings.append(Finding(str(image), None, "image cannot be read",
                                       "re-export the image or remove it and its XML"))
        return None
    h, w = img.shape[:2]
    if ann.width and ann.height and (ann.width, ann.height) != (w, h):
        report.findings.append(Finding(
            str(xml), ann.size_line, f"XML says {ann.width}x{ann.height} but {image.name} is "
            f"{w}x{h}", "the XML belongs to another image, or the image was resized: relabel it"))
        return None
    lines, ok = [], True
    for box in ann.boxes:
        problem = _box_problem(box, classes, w, h)
        if problem:
            report.findings.append(Finding(str(xml), box.line, *problem))
            ok = False
            continue
        lines.append(yolo_from_voc(box, classes.index(box.name), w, h))
    if not ok:
        return None
    report.objects += len(lines)
    return image, "".join(lines)


def _box_problem(box: VocBox, classes: list[str], w: int, h: int):
    if box.name not in classes:
        return (f"class '{box.name}' is not in obj.names ({', '.join(classes)})",
                "rename the box in labelImg or add the class to obj.names")
    if box.xmin < 0 or box.ymin < 0 or box.xmax > w or box.ymax > h:
        return (f"box ({box.xmin:g},{box.ymin:g})-({box.xmax:g},{box.ymax:g}) lies outside the "
                f"{w}x{h} image", "redraw the box inside the image in labelImg")
    if box.xmax <= box.xmin or box.ymax <= box.ymin:
        return (f"box ({box.xmin:g},{box.ymin:g})-({box.xmax:g},{box.ymax:g}) has no area",
                "redraw the box in labelImg")
    return None


def _write(planned, img_root: Path, out: Path, classes: list[str], report: VocReport) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "obj.names").write_text("".join(f"{c}\n" for c in classes))
    for image, text in planned:
        rel = image.relative_to(img_root)
        dst_img, dst_lbl = out / "images" / rel, (out / "labels" / rel).with_suffix(".txt")
        dst_img.parent.mkdir(parents=True, exist_ok=True)
        dst_lbl.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(image, dst_img)
        dst_lbl.write_text(text)
        report.converted += 1


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _walk(root: Path, exts: tuple[str, ...]):
    """Files under root with one of the extensions, in sorted order (deterministic)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts) and not name.startswith("."):
                yield Path(dirpath) / name


def _stem(path: Path, root: Path) -> str:
    return str(path.relative_to(root).with_suffix(""))


def _by_filename(xml: Path, ann: VocAnnotation, img_root: Path) -> Path | None:
    if not ann.filename:
        return None
    for candidate in (xml.parent / ann.filename, img_root / ann.filename):
        if candidate.is_file():
            return candidate
    return None


def _has_xml(image: Path, img_root: Path, xml_root: Path) -> bool:
    return (xml_root / image.relative_to(img_root)).with_suffix(".xml").exists()


@dataclass
class _Node:
    tag: str
    line: int
    children: list["_Node"] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> "_Node | None":
        return next((c for c in self.children if c.tag == tag), None)

    def find_all(self, tag: str) -> list["_Node"]:
        return [c for c in self.children if c.tag == tag]


def _parse_xml(path: Path) -> _Node:
    """A tiny element tree with line numbers (ElementTree keeps none); entities off."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(tag, _attrs):
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def chars(data):
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _tag: stack.pop()
    parser.CharacterDataHandler = chars
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except expat.ExpatError as e:
        raise BadInput(f"XML is broken: {expat.ErrorString(e.code)} (column {e.offset + 1})",
                       path=str(path), line=e.lineno,
                       hint="open it in labelImg and save again, or fix it at that line") from None
    except OSError as e:
        raise BadInput(f"cannot read the XML: {e.strerror}", path=str(path),
                       hint="check the file's permissions") from None
    return roots[0]


def _int(node: _Node | None, path) -> int | None:
    value = _float(node, path, None) if node is not None else None
    return None if value is None else int(value)


def _float(node: _Node | None, path, parent: _Node | None) -> float:
    if node is None:
        raise BadInput("a box coordinate is missing", path=str(path),
                       line=parent.line if parent else None,
                       hint="redraw the box in labelImg and save again")
    try:
        return float(node.text.strip())
    except ValueError:
        raise BadInput(f"<{node.tag}> is not a number: {node.text.strip()!r}", path=str(path),
                       line=node.line, hint="fix the value or redraw the box") from None
