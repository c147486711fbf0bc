"""Building a packaged dataset: read the sources, copy and hash each image and label,
split train/valid, write the lists, lint them, rename into place (see the package's
docstring for the layout and why)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import cv2
import numpy as np

from farm.darknet.dialect import Dialect
from farm.datasets.package.screens import ScreenStats, lint_screens
from farm.datasets.tile import image_base, label_path, tile_group, walk_images
from farm.datasets.voc import read_names
from farm.errors import BadInput, Finding, FindingsError

FORMAT = "farm-dataset/1"
MANIFEST = "manifest.json"
KINDS = ("train", "screens")  # train: lists for darknet; screens: whole screenshots to score
SIZE_EDGES = (0, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 416, 100_000)
SMALL_PX = 8  # objects below this (longer side, at the network size) are hard to learn
_CHUNK = 1 << 20
_MAX_FINDINGS = 200


@dataclass(frozen=True)
class PackageResult:
    dataset_id: str
    path: str
    images: int
    train: int
    valid: int
    created: bool  # False when an identical dataset was already there
    warnings: tuple[str, ...] = ()


def count_images(sources: Sequence[str | os.PathLike]) -> int:
    """How many images package() will read (for a progress bar)."""
    return sum(1 for src in sources for _ in walk_images(image_base(src)))


def package(sources: Sequence[str | os.PathLike], root: str | os.PathLike, *,
            names: str | os.PathLike | list[str] | None = None, valid_ratio: float = 0.2,
            seed: int = 0, valid_list: str | os.PathLike | None = None,
            network: tuple[int, int] = (416, 416), dialect: Dialect = Dialect.PJREDDIE,
            check_images: bool = True, backup_dir: str | os.PathLike | None = None,
            on_progress: Callable[[int], None] | None = None,
            kind: str = "train") -> PackageResult:
    """Build root/<id>/ from labelled folders (synthesis output, VOC imports, tiles).

    Split: with valid_list (a file of image names or paths, one a line), exactly those
    images' groups are validation; else each group goes to validation when a hash of
    (seed, group) falls under valid_ratio. A group is a source image: all tiles cut from
    one screenshot share it, so they never straddle the split.

    `kind="screens"`: full screenshots kept whole for evaluation (farm.datasets.screens):
    every image is in valid.txt, train.txt is empty, the manifest measures the screens
    and their marks in screen pixels, and the screens lint applies.
    """
    srcs = [Path(s) for s in sources]
    classes = _resolve_names(names, srcs)
    if not 0 <= valid_ratio < 1:
        raise BadInput(f"valid ratio {valid_ratio} is not in [0, 1)", hint="e.g. 0.2")
    if kind not in KINDS:
        raise BadInput(f"unknown dataset kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    wanted = _read_valid_list(valid_list) if valid_list else None
    params = {"format": FORMAT, "names": classes, "network": list(network), "seed": seed,
              "valid_ratio": None if wanted else valid_ratio,
              "valid_list_sha256": _digest_lines(sorted(wanted)) if wanted else None}
    if kind != "train":  # training datasets keep the ids they always had
        params["kind"] = kind
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-package-", dir=root))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    try:
        return _build(srcs, classes, params, wanted, root, tmp, dialect, check_images,
                      backup_dir, on_progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else the half-work


# --------------------------------------------------------------------------- build

def _build(srcs, classes, params, wanted, root: Path, tmp: Path, dialect, check_images,
           backup_dir, on_progress) -> PackageResult:
    packer = _Packer(tmp, classes, params, wanted)
    try:
        for k, src in enumerate(srcs):
            base = image_base(src)
            for image in walk_images(base):
                packer.add(f"s{k:0{len(str(len(srcs) - 1))}d}", str(src), base, image)
                if on_progress:
                    on_progress(1)
    finally:
        packer.close_files()
    packer.finish()
    dataset_id, digest = packer.identity()
    final = root / dataset_id
    if (final / MANIFEST).is_file():
        return _result(final, dataset_id, packer, created=False, warnings=())
    (tmp / "backup").mkdir()
    warnings = _lint(packer, tmp, len(classes), dialect, check_images)
    backup = Path(backup_dir).resolve() if backup_dir else final / "backup"
    lists = _write_lists(tmp, final, backup, len(classes))
    _write_manifest(tmp, packer, dataset_id, digest, final, lists)
    shutil.rmtree(tmp / ".work")
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            raise
        return _result(final, dataset_id, packer, created=False, warnings=())  # a twin won
    return _result(final, dataset_id, packer, created=True, warnings=tuple(warnings))


def _result(final, dataset_id, packer, *, created, warnings) -> PackageResult:
    return PackageResult(dataset_id, str(final), packer.images, packer.train, packer.valid,
                         created, warnings)


@dataclass
class _Stats:
    """Counts and object sizes (pixels at the network size), in constant memory."""

    classes: int
    network: tuple[int, int]
    per_class: list[int] = field(default_factory=list)
    objects: int = 0
    negatives: int = 0
    small: int = 0
    long_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(SIZE_EDGES) - 1, int))
    long_min: float = float("inf")
    long_max: float = 0.0
    long_sum: float = 0.0

    def __post_init__(self):
        self.per_class = [0] * self.classes

    def add(self, cls: int, w: float, h: float) -> None:
        long = max(w * self.network[0], h * self.network[1])
        self.per_class[cls] += 1
        self.objects += 1
        self.small += long < SMALL_PX
        self.long_hist[np.searchsorted(SIZE_EDGES, long, side="right") - 1] += 1
        self.long_min, self.long_max = min(self.long_min, long), max(self.long_max, long)
        self.long_sum += long

    def summary(self, names: list[str]) -> dict:
        return {
            "objects": self.objects, "negatives": self.negatives,
            "per_class": dict(zip(names, self.per_class)),
            "object_size_px": {
                "network": list(self.network), "measure": "longer side at the network size",
                "min": round(self.long_min, 2) if self.objects else None,
                "max": round(self.long_max, 2) if self.objects else None,
                "mean": round(self.long_sum / self.objects, 2) if self.objects else None,
                f"under_{SMALL_PX}px": self.small,
                "histogram": {"edges": list(SIZE_EDGES), "counts": self.long_hist.tolist()}}}


class _Packer:
    """Copies and hashes one image at a time; lists and indexes go to files in .work/."""

    def __init__(self, tmp: Path, classes: list[str], params: dict, wanted: set | None):
        self.tmp, self.classes, self.params, self.wanted = tmp, classes, params, wanted
        work = tmp / ".work"
        work.mkdir()
        self.work = work
        self.lists = {split: open(work / f"{split}.rel", "w") for split in ("train", "valid")}
        self.index = open(work / "files.tsv", "w")  # rel \t sha256 \t bytes; image, its label
        self.stats = _Stats(len(classes), tuple(params["network"]))
        self.findings: list[Finding] = []
        self.images = self.train = self.valid = 0
        self.groups_seen: set[str] = set()  # at most two: enough to know a split is possible
        self.screens = None  # measured while copying a screens set
        if params.get("kind") == "screens":
            self.screens = ScreenStats()
        self.lowest_train: tuple[float, str] | None = None
        self.highest_valid: tuple[float, str] | None = None
        self._last_dir = ""

    def add(self, prefix: str, src: str, base: str, image: str) -> None:
        """Copy one image and its label in; plain strings keep memory flat (see walk_images)."""
        rel = image[len(base) + 1:].replace(os.sep, "/")
        stem = os.path.splitext(rel)[0]
        label = label_path(image, src)
        if not os.path.isfile(label):
            self._finding(Finding(image, None, "image has no label file",
                                  f"create {label} (empty when the image has no object)"))
            return
        dst, ldst = f"data/{prefix}/{rel}", f"data/{prefix}/{stem}.txt"
        if os.path.exists(f"{self.tmp}/{ldst}"):
            raise BadInput(f"two images named {os.path.basename(stem)}.* in one folder would "
                           "share one label", path=image, hint="rename one of them")
        self._mkdir(os.path.dirname(f"{self.tmp}/{dst}"))
        sha, size = _copy_hashed(image, f"{self.tmp}/{dst}")
        if cv2.imread(f"{self.tmp}/{dst}", cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
            raise BadInput("image cannot be read (not an image, or corrupt)", path=image,
                           hint="re-export it or remove it (and its label) from the source")
        lsha, lsize = _copy_hashed(label, f"{self.tmp}/{ldst}", self._check_label)
        if self.screens is not None:
            self.screens.add(f"{self.tmp}/{dst}", label)
        self.index.write(f"{dst}\t{sha}\t{size}\n{ldst}\t{lsha}\t{lsize}\n")
        self._assign(dst, tile_group(os.path.basename(stem)))
        self.images += 1

    def _mkdir(self, folder: str) -> None:
        if folder != self._last_dir:
            os.makedirs(folder, exist_ok=True)
            self._last_dir = folder

    def _check_label(self, data: bytes, path: str) -> None:
        text = data.decode("utf-8", "replace")
        if not text.strip():
            self.stats.negatives += 1
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            problem = _label_problem(line.split(), len(self.classes))
            if problem:
                self._finding(Finding(path, n, problem,
                                      "fix the line: 'class cx cy w h', class < classes, "
                                      "cx cy w h in (0, 1]"))
                continue
            parts = line.split()
            self.stats.add(int(parts[0]), float(parts[3]), float(parts[4]))

    def _assign(self, dst: str, group: str) -> None:
        if len(self.groups_seen) < 2:
            self.groups_seen.add(group)
        if self.screens is not None:
            split = "valid"  # a screens set is scored, never trained on
        elif self.wanted is not None:
            split = "valid" if group in self.wanted else "train"
        else:
            score = _score(self.params["seed"], group)
            split = "valid" if score < self.params["valid_ratio"] else "train"
            if split == "train" and (self.lowest_train is None or score < self.lowest_train[0]):
                self.lowest_train = (score, group)
            if split == "valid" and (self.highest_valid is None or score > self.highest_valid[0]):
                self.highest_valid = (score, group)
        self.lists[split].write(dst + "\n")
        setattr(self, split, getattr(self, split) + 1)

    def _finding(self, finding: Finding) -> None:
        if len(self.findings) < _MAX_FINDINGS:
            self.findings.append(finding)

    def close_files(self) -> None:
        for f in (*self.lists.values(), self.index):
            f.close()

    def finish(self) -> None:
        """Refuse what was found, keep both splits non-empty, write obj.names."""
        if self.findings:
            raise FindingsError(self.findings, what="dataset sources")
        if not self.images:
            raise BadInput("the sources hold no images",
                           hint="give folders with images/ + labels/ or images with .txt beside")
        if self.wanted is not None and not self.valid:
            raise BadInput("no source image matches the validation list",
                           hint="list image names (e.g. shot1.jpg) or paths, one a line")
        self._never_empty()
        names = "".join(f"{c}\n" for c in self.classes)
        (self.tmp / "obj.names").write_text(names)
        self.names_sha = hashlib.sha256(names.encode()).hexdigest()

    def _never_empty(self) -> None:
        """A tiny set can hash every group to one side: move the nearest group across."""
        if self.wanted is not None or len(self.groups_seen) < 2 or self.screens is not None:
            return
        if not self.valid and self.params["valid_ratio"] > 0:
            self._move(self.lowest_train[1], "train", "valid")
        elif not self.train:
            self._move(self.highest_valid[1], "valid", "train")

    def _move(self, group: str, frm: str, to: str) -> None:
        src, dst = self.work / f"{frm}.rel", self.work / f"{to}.rel"
        keep = self.work / f"{frm}.keep"
        with open(src) as lines, open(keep, "w") as stay, open(dst, "a") as go:
            for line in lines:
                moving = tile_group(os.path.splitext(os.path.basename(line.strip()))[0]) == group
                (go if moving else stay).write(line)
                setattr(self, frm, getattr(self, frm) - moving)
                setattr(self, to, getattr(self, to) + moving)
        os.replace(keep, src)

    def identity(self) -> tuple[str, str]:
        """sha256 over the parameters, then (relative path, sha256) of each image and its
        label in sorted image-path order, then obj.names. The id is its first 16 hex digits.
        """
        h = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode() + b"\n")
        with open(self.work / "files.tsv") as f:
            for line in f:
                rel, sha, _ = line.rstrip("\n").split("\t")
                h.update(f"{rel}\t{sha}\n".encode())
        h.update(f"obj.names\t{self.names_sha}\n".encode())
        digest = h.hexdigest()
        return digest[:16], digest


def _label_problem(parts: list[str], classes: int) -> str | None:
    if len(parts) != 5:
        return f"{len(parts)} fields instead of 5"
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        return "a field is not a number"
    if not 0 <= cls < classes:
        return f"class id {cls} is outside 0..{classes - 1}"
    if not all(0 < v <= 1 for v in values):
        return "a coordinate or size is outside (0, 1]"
    return None


def _score(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _copy_hashed(src: str, dst: str, check=None) -> tuple[str, int]:
    """Copy in chunks while hashing; `check(data, src)` sees small files whole."""
    h, size = hashlib.sha256(), 0
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                if check is not None:
                    check(chunk, src)  # label files are far below one chunk
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
    except OSError as e:
        raise BadInput(f"cannot read: {e.strerror}", path=str(src),
                       hint="check that the file exists and is readable") from None
    if check is not None and size == 0:
        check(b"", src)
    return h.hexdigest(), size


# --------------------------------------------------------------------------- names, lists

def _resolve_names(names, srcs: list[Path]) -> list[str]:
    if not srcs:
        raise BadInput("no sources to package", hint="give at least one labelled folder")
    for s in srcs:
        if not s.is_dir():
            raise BadInput("source folder does not exist", path=str(s), hint="check the path")
    if isinstance(names, list):
        classes = names
    elif names is not None:
        classes = read_names(names)
    else:
        first = next((s / "obj.names" for s in srcs if (s / "obj.names").is_file()), None)
        if first is None:
            raise BadInput("no class names: no source has an obj.names",
                           hint="pass --names obj.names")
        classes = read_names(first)
    for s in srcs:
        own = s / "obj.names"
        if own.is_file() and read_names(own) != classes:
            raise BadInput(f"class names differ from {classes}: class ids would mean "
                           "different things", path=str(own),
                           hint="relabel the source or use the same obj.names everywhere")
    return classes


def _read_valid_list(path) -> set[str]:
    """Group keys of the listed images (file names or paths; tiles map to their source)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise BadInput(f"cannot read the validation list: {e.strerror}", path=str(path),
                       hint="one image name or path per line") from None
    wanted = {tile_group(PurePosixPath(ln.strip().replace("\\", "/")).stem)
              for ln in lines if ln.strip()}
    if not wanted:
        raise BadInput("the validation list is empty", path=str(path),
                       hint="one image name or path per line")
    return wanted


def _digest_lines(lines) -> str:
    return hashlib.sha256("".join(f"{ln}\n" for ln in lines).encode()).hexdigest()


def _write_lists(tmp: Path, base: Path, backup: Path, classes: int) -> dict[str, str]:
    """train.txt, valid.txt and obj.data with absolute paths under `base`; their sha256."""
    shas = {}
    for split in ("train", "valid"):
        h = hashlib.sha256()
        with open(tmp / ".work" / f"{split}.rel") as rel, open(tmp / f"{split}.txt", "w") as out:
            for line in rel:
                text = f"{base}/{line}"
                out.write(text)
                h.update(text.encode())
        shas[f"{split}.txt"] = h.hexdigest()
    data = (f"classes = {classes}\ntrain = {base}/train.txt\nvalid = {base}/valid.txt\n"
            f"names = {base}/obj.names\nbackup = {backup}\n")
    (tmp / "obj.data").write_text(data)
    shas["obj.data"] = hashlib.sha256(data.encode()).hexdigest()
    return shas


def _lint(packer: _Packer, tmp: Path, classes: int, dialect: Dialect, check_images: bool):
    """Run the dataset lint on the finished lists, in place in the temporary folder.

    Errors raise FindingsError (and the temporary folder goes); warnings are returned.
    """
    _write_lists(tmp, tmp, tmp / "backup", classes)
    if packer.screens is not None:
        return lint_screens(tmp, packer.screens, classes, dialect, check_images)
    try:
        from farm.datasets.lint import lint_obj_data
    except ModuleNotFoundError as e:
        if e.name != "farm.datasets.lint":
            raise
        return ["dataset lint is not available (farm.datasets.lint missing): not linted"]
    report = lint_obj_data(str(tmp / "obj.data"), classes=classes, dialect=dialect,
                           check_images=check_images, net_size=tuple(packer.params["network"]))
    report.raise_for_errors()
    return [str(f).replace(str(tmp), "<dataset>") for f in report.warnings]


def _write_manifest(tmp: Path, packer: _Packer, dataset_id: str, digest: str, final: Path,
                    lists: dict[str, str]) -> None:
    """manifest.json with the file table last, written line by line from the index."""
    head = {"format": FORMAT, "id": dataset_id, "sha256": digest, "params": packer.params,
            "location": str(final), "names": packer.classes,
            "counts": {"images": packer.images, "train": packer.train, "valid": packer.valid,
                       **packer.stats.summary(packer.classes)},
            "lists": lists}
    if packer.screens is not None:
        head["kind"] = "screens"
        head["screens"] = packer.screens.summary()
    text = json.dumps(head, indent=1, sort_keys=False)
    with open(tmp / MANIFEST, "w") as out:
        out.write(text[:-2] + ',\n "files": {\n')
        first = True
        with open(tmp / ".work" / "files.tsv") as f:
            for line in f:
                rel, sha, size = line.rstrip("\n").split("\t")
                out.write(("" if first else ",\n") +
                          f'  {json.dumps(rel)}: {{"sha256": "{sha}", "bytes": {size}}}')
                first = False
        out.write(("" if first else ",\n") +
                  f'  "obj.names": {{"sha256": "{packer.names_sha}", '
                  f'"bytes": {(tmp / "obj.names").stat().st_size}}}\n }}\n}}\n')
