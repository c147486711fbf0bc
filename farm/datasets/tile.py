"""Cut large screenshots into network-sized tiles, and map tile detections back.

Why (seed, ds6): a 32 px "×" in a 1080×2400 screenshot shrinks to about 6 px when darknet
resizes the whole screen to 416×416, too small to learn or find. Tiles keep the mark at
its true size. Labels are clipped to each tile and kept only when enough of the box is
inside; every tile's origin (source image, x, y, w, h) goes to `tiles.jsonl` so that
detections on tiles can be mapped back onto the full screenshot (merging them is
farm.eval.nms.merge_tiles, what `farm detect --tile` does).

This module also holds the labelled-folder conventions shared by the dataset tools: a
folder is either `images/` + `labels/` mirrored (darknet swaps "images" for "labels"), or
images with their `.txt` beside them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from farm.datasets.synth import yolo_line
from farm.errors import BadInput

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MANIFEST = "tiles.jsonl"
PAD_VALUE = (114, 114, 114)  # grey padding where an image is smaller than a tile


# --------------------------------------------------------------------------- folder layout

def iter_images(root: str | os.PathLike) -> Iterator[Path]:
    """Image files of a labelled folder in sorted relative-path order (stable everywhere)."""
    return map(Path, walk_images(image_base(root)))


def image_base(root: str | os.PathLike) -> str:
    """The folder images are relative to: root/images when it exists, else root."""
    images = os.path.join(os.fspath(root), "images")
    return images if os.path.isdir(images) else os.fspath(root)


def walk_images(folder: str) -> Iterator[str]:
    """Image paths under folder as plain strings, sorted by relative path.

    Entries are sorted with "/" appended to folder names, which makes this depth-first walk
    yield exactly the lexicographic order of the relative paths. Strings, not Path
    objects: pathlib interns every path part for good, which grows with the file count.
    """
    with os.scandir(folder) as it:
        entries = sorted(((e.name + "/" if e.is_dir() else e.name), e.path) for e in it
                         if not e.name.startswith("."))
    for key, path in entries:
        if key.endswith("/"):
            yield from walk_images(path)
        elif key.lower().endswith(IMAGE_EXTS):
            yield path


def label_for(image: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Where the YOLO label of an image lives in a labelled folder."""
    return Path(label_path(os.fspath(image), os.fspath(root)))


def label_path(image: str, root: str) -> str:
    """label_for on plain strings (the packaging loop runs it once per image)."""
    images = os.path.join(root, "images") + os.sep
    if image.startswith(images):
        return os.path.join(root, "labels", os.path.splitext(image[len(images):])[0] + ".txt")
    return os.path.splitext(image)[0] + ".txt"


def image_rel(image: Path, root: str | os.PathLike) -> Path:
    """An image's path relative to the folder's image root."""
    return Path(os.path.relpath(image, image_base(root)))


def read_yolo(path: Path) -> list[tuple[int, float, float, float, float]]:
    """YOLO lines (class, cx, cy, w, h); a malformed one raises BadInput with its line."""
    boxes = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the label file: {e}", path=str(path),
                       hint="it must be a text file beside/mirroring its image") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError
            cls, rest = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise BadInput(f"label line is not 'class cx cy w h': {line.strip()!r}",
                           path=str(path), line=n, hint="fix or delete the line") from None
        boxes.append((cls, *rest))
    return boxes


# --------------------------------------------------------------------------- tiles

@dataclass(frozen=True)
class TileOrigin:
    """Where a tile came from: the source image and the region (pixels) it covers."""

    tile: str  # tile image, relative to the tiling output folder
    source: str  # source image, absolute
    x: int
    y: int
    w: int  # covered width in the source (less than tile_w where the tile is padded)
    h: int
    tile_w: int
    tile_h: int

    def box_to_image(self, cx: float, cy: float, bw: float, bh: float):
        """A tile-relative YOLO box (as darknet prints) -> (x0, y0, x1, y1) source pixels."""
        x0, y0 = (cx - bw / 2) * self.tile_w + self.x, (cy - bh / 2) * self.tile_h + self.y
        return x0, y0, x0 + bw * self.tile_w, y0 + bh * self.tile_h


@dataclass
class TileReport:
    tiles: int = 0
    boxes: int = 0  # boxes written into tiles (a box can appear in several overlapping tiles)
    dropped_partial: int = 0  # box pieces under min_fraction, left unlabelled
    skipped: int = 0  # tiles not written (empty beyond keep_empty, or cut boxes with drop_partial)
    manifest: str = ""


def tile_positions(length: int, size: int, overlap: int) -> list[int]:
    """Tile starts covering [0, length): equal steps, the last one flush with the end."""
    if length <= size:
        return [0]
    step = size - overlap
    n = math.ceil((length - size) / step) + 1
    return sorted({min(i * step, length - size) for i in range(n)})


def clip_boxes(boxes_px, rect, min_fraction: float):
    """Boxes (cls, x0, y0, x1, y1) cut to rect=(x, y, w, h), in rect coordinates.

    A box is kept when at least min_fraction of its area is inside; returns (kept, dropped).
    """
    rx, ry, rw, rh = rect
    kept, dropped = [], 0
    for cls, x0, y0, x1, y1 in boxes_px:
        ix0, iy0, ix1, iy1 = max(x0, rx), max(y0, ry), min(x1, rx + rw), min(y1, ry + rh)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        area = (x1 - x0) * (y1 - y0)
        if area <= 0 or (ix1 - ix0) * (iy1 - iy0) < min_fraction * area:
            dropped += 1
            continue
        kept.append((cls, ix0 - rx, iy0 - ry, ix1 - rx, iy1 - ry))
    return kept, dropped


def tile_dataset(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                 tile: tuple[int, int] = (416, 416), overlap: int = 64,
                 min_fraction: float = 0.5, region: tuple[float, float, float, float] | None = None,
                 keep_empty: float = 1.0, drop_partial: bool = False, seed: int = 0,
                 on_progress: Callable[[int], None] | None = None) -> TileReport:
    """Tile every labelled image of src into out_dir/images + labels + tiles.jsonl.

    region: (x0, y0, x1, y1) fractions of each image to tile, e.g. (0, 0, 1, 0.5) for the
    top half (the seed's "the lower half is not needed"). keep_empty: fraction of tiles
    without any box to keep (chosen by a hash of seed and name, so reruns agree).
    drop_partial: skip tiles where a box was cut below min_fraction (a half "×" left
    unlabelled would teach the network that it is background).
    """
    tw, th = tile
    _check_args(tw, th, overlap, min_fraction, region, keep_empty)
    src, out = Path(src), Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if (src / "obj.names").is_file():
        (out / "obj.names").write_bytes((src / "obj.names").read_bytes())
    report = TileReport(manifest=str(out / MANIFEST))
    tmp_manifest = out / f".{MANIFEST}.tmp"
    found = False
    with open(tmp_manifest, "w") as manifest:
        for image in iter_images(src):
            found = True
            _tile_one(image, src, out, tile, overlap, min_fraction, region, keep_empty,
                      drop_partial, seed, manifest, report)
            if on_progress:
                on_progress(1)
    if not found:
        tmp_manifest.unlink()
        raise BadInput("no images to tile", path=str(src),
                       hint=f"give a folder with {', '.join(IMAGE_EXTS)} files and YOLO labels")
    os.replace(tmp_manifest, out / MANIFEST)
    return report


def read_origins(manifest: str | os.PathLike) -> Iterator[TileOrigin]:
    """The tile origins recorded by tile_dataset, one per tile, streamed."""
    with open(manifest) as f:
        for n, line in enumerate(f, 1):
            try:
                yield TileOrigin(**json.loads(line))
            except (ValueError, TypeError) as e:
                raise BadInput(f"bad tile record: {e}", path=str(manifest), line=n,
                               hint="regenerate it with `farm dataset tile`") from None


# --------------------------------------------------------------------------- internals

def _check_args(tw, th, overlap, min_fraction, region, keep_empty) -> None:
    if tw < 32 or th < 32:
        raise BadInput(f"tile {tw}x{th} is too small", hint="use the network size, e.g. 416x416")
    if not 0 <= overlap < min(tw, th):
        raise BadInput(f"overlap {overlap} must be at least 0 and below the tile size",
                       hint="about the largest mark size, e.g. 64")
    if not 0 < min_fraction <= 1 or not 0 <= keep_empty <= 1:
        raise BadInput("min_fraction must be in (0, 1] and keep_empty in [0, 1]",
                       hint="e.g. min_fraction 0.5, keep_empty 1.0")
    if region is not None:
        x0, y0, x1, y1 = region
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise BadInput(f"region {region} is not (x0, y0, x1, y1) fractions with x0<x1, y0<y1",
                           hint="e.g. 0,0,1,0.5 for the top half")


def _tile_one(image: Path, src: Path, out: Path, tile, overlap, min_fraction, region,
              keep_empty, drop_partial, seed, manifest, report: TileReport) -> None:
    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInput("image cannot be read", path=str(image),
                       hint="re-export it or remove it from the folder")
    h, w = img.shape[:2]
    label = label_for(image, src)
    if not label.is_file():
        raise BadInput("image has no label file", path=str(image),
                       hint=f"expected {label}; an empty file marks an image without objects")
    boxes = [(c, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
             for c, cx, cy, bw, bh in read_yolo(label)]
    rx0, ry0, rx1, ry1 = (0, 0, w, h) if region is None else (
        round(region[0] * w), round(region[1] * h), round(region[2] * w), round(region[3] * h))
    rel = image_rel(image, src)
    tw, th = tile
    for y in tile_positions(ry1 - ry0, th, overlap):
        for x in tile_positions(rx1 - rx0, tw, overlap):
            ox, oy = rx0 + x, ry0 + y
            cw, ch = min(tw, rx1 - ox), min(th, ry1 - oy)
            kept, dropped = clip_boxes(boxes, (ox, oy, cw, ch), min_fraction)
            report.dropped_partial += dropped
            name = f"{rel.stem}__x{ox:05d}_y{oy:05d}{rel.suffix}"
            if (dropped and drop_partial) or (not kept and not _keep(seed, name, keep_empty)):
                report.skipped += 1
                continue
            _write_tile(img[oy:oy + ch, ox:ox + cw], kept, tile, out, rel.parent / name)
            origin = TileOrigin(str(Path("images") / rel.parent / name), str(image.resolve()),
                                ox, oy, cw, ch, tw, th)
            manifest.write(json.dumps(asdict(origin)) + "\n")
            report.tiles += 1
            report.boxes += len(kept)


def _write_tile(crop: np.ndarray, boxes, tile, out: Path, rel: Path) -> None:
    tw, th = tile
    if crop.shape[:2] != (th, tw):  # keep true scale: pad, never stretch
        crop = cv2.copyMakeBorder(crop, 0, th - crop.shape[0], 0, tw - crop.shape[1],
                                  cv2.BORDER_CONSTANT, value=PAD_VALUE)
    dst = out / "images" / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dst.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(dst), crop, params):
        raise BadInput("could not write a tile", path=str(dst), hint="check the output folder")
    label = (out / "labels" / rel).with_suffix(".txt")
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text("".join(yolo_line(c, x0, y0, x1, y1, tw, th) for c, x0, y0, x1, y1 in boxes))


def _keep(seed: int, name: str, fraction: float) -> bool:
    if fraction >= 1:
        return True
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def tile_group(rel_stem: str) -> str:
    """The source-image key of a tile name (`shot__x00000_y00416` -> `shot`), else itself."""
    head, sep, tail = rel_stem.rpartition("__x")
    if sep and len(tail) == 12 and tail[5:7] == "_y" and tail[:5].isdigit() and tail[7:].isdigit():
        return head
    return rel_stem
