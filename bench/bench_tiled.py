"""Tiled detection on a 1080x2400 screenshot: milliseconds per screenshot, the farm's
batched OpenCV DNN path next to darknet's own detection of the same tiles, in one run.

What is measured, side by side and repeated (the machine may be shared: the load average
is printed before and after, and each figure is the median of --repeat runs):

- farm:     DnnDetector.detect_tiled: one network load, the 416x416 tiles (64 px overlap:
            3 x 7 = 21 tiles) through blobFromImages in batches of TILE_BATCH, one merge;
- one by one: the same, one tile per forward pass (TILE_BATCH = 1), as before batching;
- strips, one tile: the network run at 416x2400 (3 strips, overlapping by 64 px across
            only) or 1088x2400 (the whole screen, padded): `--tile-size`; the network is
            convolutional, but a box near a 416 tile's edge sees other context there:
            the share of its boxes that the 416x416 tiling also finds (IoU above 0.9)
            is printed. Judge a strip size by its screens mAP (`farm eval --screens
            SCREENS --tile-size 416x2400`), not by speed alone;
- darknet:  `darknet detector valid` over the same 21 tiles written as PNG files: one
            network load, then darknet's own forward pass per tile; its own "Total
            Detection Time" (after the load) is the figure.

Networks: yolov4-tiny (the seed's network) and yolov3-tiny at 416x416, one class. Debian's
darknet (pjreddie) cannot run yolov4-tiny (route groups, an assertion abort), so the
head-to-head is on yolov3-tiny (5.6 BFLOPs, yolov4-tiny 6.9), the same cfg and weights
on both sides; yolov4-tiny runs on the farm's side only. The weights are written here
(workers.micro.random_weights) because no darknet here can train yolov4-tiny. The forward
pass does not depend on what the weights learned, the merge does: "sparse" weights have
their heads nearly silent (workers.micro.SPARSE_OBJECTNESS): some boxes a tile pass 0.005,
as with a trained detector on a screen with few marks; "dense" ones (plain He
initialisation) find boxes everywhere, tens of thousands a screenshot even at 0.25: the
worst case. The micro network at 64x64 (32 px overlap: 2 442 tiles a screenshot) shows
what batching does where per-call overhead dominates.

    python bench/bench_tiled.py [--repeat 3] [--darknet darknet] [--cfg-dir ../shared/darknet/cfg]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import farm.eval.detect as detect  # noqa: E402
from farm.darknet.cfg import Cfg, make_cfg  # noqa: E402
from farm.datasets.synth import SynthSpec  # noqa: E402
from farm.datasets.synth.render import render  # noqa: E402
from farm.datasets.tile import tile_positions  # noqa: E402
from workers.micro import micro_cfg, random_weights  # noqa: E402

SCREEN = (1080, 2400)
OVERLAP = 64


def screenshot(seed: int):
    """A phone-game-like 1080x2400 screen with close marks at true scale (synthesis's)."""
    spec = SynthSpec(canvas=SCREEN, mark_px=(32, 56), marks=(2, 4), distractors=(4, 8))
    return render(spec, 0, seed)[0]


def network(cfg_dir: Path, name: str, root: Path, sparse: bool = True) -> tuple[Path, Path]:
    base = Cfg.load(cfg_dir / f"{name}.cfg")
    cfg = make_cfg(base, classes=1, width=416, height=416, batch=8, subdivisions=2)
    path = root / f"{name}.cfg"
    cfg.save(path)
    weights = root / f"{name}{'' if sparse else '-dense'}.weights"
    return path, random_weights(path, weights, sparse=sparse,
                                dialect="pjreddie" if "v3" in name else "alexeyab")


def farm_ms(cfg: Path, weights: Path, image, thresh: float, batch: int,
            tile=(416, 416), overlap: int | None = OVERLAP) -> tuple[float, int]:
    """ms for one screenshot (the network loaded beforehand), and the detections."""
    dialect = "pjreddie" if "v4" not in cfg.name else "alexeyab"  # route groups
    weights = Path(weights)
    detector = detect.DnnDetector(cfg, weights, thresh=thresh, dialect=dialect)
    old, detect.TILE_BATCH = detect.TILE_BATCH, batch
    try:
        detector.detect_tiled(image, tile=tile, overlap=overlap)  # warm-up
        start = time.perf_counter()
        found = detector.detect_tiled(image, tile=tile, overlap=overlap)
        return (time.perf_counter() - start) * 1000, len(found)
    finally:
        detect.TILE_BATCH = old


def agreement(cfg: Path, weights: Path, image, tile: tuple[int, int]) -> float:
    """Share of the boxes found with `tile` that 416x416 tiles find too (IoU > 0.9)."""
    detector = detect.DnnDetector(cfg, weights, dialect="alexeyab")
    ref = detector.detect_tiled(image, overlap=OVERLAP)
    other = detector.detect_tiled(image, tile=tile, overlap=OVERLAP)
    if not other:
        return float("nan")
    from farm.eval.mapcalc import iou
    boxes = [(f.cx, f.cy, f.w, f.h) for f in ref]
    hit = sum(any(iou((f.cx, f.cy, f.w, f.h), b) > 0.9 for b in boxes) for f in other)
    return hit / len(other)


def write_tiles(image, root: Path) -> Path:
    h, w = image.shape[:2]
    paths = []
    (root / "tiles").mkdir(exist_ok=True)
    for y in tile_positions(h, 416, OVERLAP):
        for x in tile_positions(w, 416, OVERLAP):
            path = root / "tiles" / f"t{x:04d}_{y:04d}.png"
            cv2.imwrite(str(path), image[y:y + 416, x:x + 416])
            paths.append(str(path))
    (root / "tiles.txt").write_text("\n".join(paths) + "\n")
    (root / "names").write_text("c0\n")
    (root / "results").mkdir(exist_ok=True)
    (root / "obj.data").write_text(f"classes = 1\nvalid = {root / 'tiles.txt'}\n"
                                   f"names = {root / 'names'}\nresults = {root / 'results'}\n")
    return root / "obj.data"


def darknet_ms(binary: str, data: Path, cfg: Path, weights: Path, root: Path) -> float:
    """darknet's own time for the tiles (its "Total Detection Time", after loading)."""
    done = subprocess.run([binary, "detector", "valid", str(data), str(cfg), str(weights)],
                          cwd=root, capture_output=True, text=True, timeout=3600)
    found = re.search(r"Total Detection Time: ([\d.]+) Seconds", done.stderr + done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"darknet detector valid failed ({done.returncode}):\n"
                         f"{(done.stderr or done.stdout)[-800:]}")
    return float(found.group(1)) * 1000


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--darknet", default="darknet")
    ap.add_argument("--cfg-dir", type=Path, default=REPO.parent / "shared/darknet/cfg",
                    help="folder with upstream yolov4-tiny.cfg and yolov3-tiny.cfg")
    args = ap.parse_args()
    binary = shutil.which(args.darknet)
    if binary is None or not (args.cfg_dir / "yolov4-tiny.cfg").is_file():
        raise SystemExit(f"needs darknet on PATH ({args.darknet}) and the upstream cfgs in "
                         f"{args.cfg_dir} (--cfg-dir)")
    root = Path(tempfile.mkdtemp(prefix="bench-tiled-"))
    try:
        image = screenshot(1)
        tiles = len(tile_positions(SCREEN[0], 416, OVERLAP)) * \
            len(tile_positions(SCREEN[1], 416, OVERLAP))
        print(f"load average before: {load()}  ({os.cpu_count()} cores); screenshot "
              f"{SCREEN[0]}x{SCREEN[1]}, {tiles} tiles of 416x416 ({OVERLAP} px overlap), "
              f"TILE_BATCH {detect.TILE_BATCH}, median of {args.repeat}")
        v4 = network(args.cfg_dir, "yolov4-tiny", root)
        v4_dense = network(args.cfg_dir, "yolov4-tiny", root, sparse=False)
        v3 = network(args.cfg_dir, "yolov3-tiny", root)
        data = write_tiles(image, root)
        rows: dict[str, list[float]] = {}
        found: dict[str, int] = {}

        def add(label: str, ms_found: tuple[float, int] | float) -> None:
            ms, n = ms_found if isinstance(ms_found, tuple) else (ms_found, None)
            rows.setdefault(label, []).append(ms)
            if n is not None:
                found[label] = n

        for _ in range(args.repeat):  # interleaved: every path sees the same load
            add("yolov3-tiny darknet detector valid (thresh 0.005)",
                darknet_ms(binary, data, *v3, root))
            add("yolov3-tiny farm batched (thresh 0.005)",
                farm_ms(*v3, image, detect.DETECT_THRESH, detect.TILE_BATCH))
            add("yolov3-tiny farm one tile a pass (thresh 0.005)",
                farm_ms(*v3, image, detect.DETECT_THRESH, 1))
            add("yolov4-tiny farm batched (thresh 0.005)",
                farm_ms(*v4, image, detect.DETECT_THRESH, detect.TILE_BATCH))
            add("yolov4-tiny farm batched (thresh 0.25)",
                farm_ms(*v4, image, 0.25, detect.TILE_BATCH))
            add("yolov4-tiny dense weights, farm batched (0.25)",
                farm_ms(*v4_dense, image, 0.25, detect.TILE_BATCH))
            add("yolov4-tiny farm 416x2400 strips (0.25)",
                farm_ms(*v4, image, 0.25, detect.TILE_BATCH, (416, 2400)))
            add("yolov4-tiny farm one 1088x2400 tile (0.25)",
                farm_ms(*v4, image, 0.25, detect.TILE_BATCH, (1088, 2400)))
        micro = micro_cfg(root / "micro.cfg")
        micro_w = random_weights(micro, root / "micro.weights", dialect="pjreddie", sparse=True)
        for _ in range(args.repeat):
            add("micro 64x64 farm batched (thresh 0.25)",
                farm_ms(micro, micro_w, image, 0.25, detect.TILE_BATCH, (64, 64), None))
            add("micro 64x64 farm one tile a pass (thresh 0.25)",
                farm_ms(micro, micro_w, image, 0.25, 1, (64, 64), None))
        print(f"\n{'path':<50} {'median ms':>10} {'best ms':>8} {'runs (ms)':>22} {'boxes':>6}")
        med = {k: statistics.median(v) for k, v in rows.items()}
        low = {k: min(v) for k, v in rows.items()}
        for label, values in rows.items():
            runs = " ".join(f"{v:.0f}" for v in values)
            print(f"{label:<50} {med[label]:>10.0f} {low[label]:>8.0f} {runs:>22} "
                  f"{found.get(label, '-'):>6}")
        dark, farm = ("yolov3-tiny darknet detector valid (thresh 0.005)",
                      "yolov3-tiny farm batched (thresh 0.005)")
        print(f"\nyolov3-tiny, same cfg, weights and tiles: darknet / farm = "
              f"{med[dark] / med[farm]:.1f}x by medians, {low[dark] / low[farm]:.1f}x by best "
              f"runs (goal: 5x)")
        bot = "yolov4-tiny farm batched (thresh 0.25)"
        print(f"yolov4-tiny at 0.25: {med[bot]:.0f} ms a screenshot by median, {low[bot]:.0f} ms "
              f"best (goal: under 1000)")
        one, many = "one tile a pass", "batched"
        print("batching: " + "; ".join(
            f"{net} {med[f'{net} farm {one}{tail}'] / med[f'{net} farm {many}{tail}']:.2f}x"
            for net, tail in (("yolov3-tiny", " (thresh 0.005)"),
                              ("micro 64x64", " (thresh 0.25)"))) + " (one by one / batched)")
        for tile in ((416, 2400), (1088, 2400)):
            print(f"boxes at 0.005 found with {tile[0]}x{tile[1]} that 416x416 tiles find too: "
                  f"{agreement(*v4, image, tile):.1%}")
        print(f"load average after: {load()}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
