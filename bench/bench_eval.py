"""Evaluation throughput (images per second): the farm-native path (OpenCV DNN detections
scored by farm.eval.mapcalc) next to darknet's own detections (`darknet detector valid`,
the Debian build's only detection path; scored by the same mapcalc), on the same weights
and the same valid list, with the mAP of each (they must agree).

`darknet detector map` has no Debian build; with an AlexeyAB or hank-ai binary, pass
`--darknet PATH` and its `map` path is timed as a third column.

The weights are the micro network (workers.micro) trained here by darknet for a few seconds;
being all-convolutional they also run at 416x416, the size of real training tiles, where
the network's compute matters more than the per-image overheads.

    python bench/bench_eval.py [--images 200] [--iterations 400] [--darknet darknet]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.darknet import dialect as dialects  # noqa: E402
from farm.eval.evaluate import evaluate_checkpoint  # noqa: E402
from workers.micro import draw_mark, micro_cfg, micro_dataset  # noqa: E402


def train(root: Path, darknet: str, iterations: int) -> tuple[Path, Path]:
    data = micro_dataset(root / "train", images=64, seed=0)
    cfg = micro_cfg(root / "micro.cfg", max_batches=iterations)
    subprocess.run([darknet, "detector", "train", str(data), str(cfg)], cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cfg, data.parent / "backup" / "micro_final.weights"


def valid_set(root: Path, images: int, size: int) -> Path:
    """obj.data whose valid list holds `images` labelled images of size x size, with one to
    three marks at the training scale (10-21 px) drawn the way workers.micro draws them."""
    folder = root / f"valid{size}"
    (folder / "frames").mkdir(parents=True)
    rng = np.random.default_rng(size)
    paths = []
    for k in range(images):
        img = (rng.random((size, size, 3)) * 60 + 70).astype(np.uint8)
        lines = []
        for _ in range(1 if size <= 64 else int(rng.integers(1, 4))):
            s = int(rng.integers(10, 21))
            x, y = (int(v) for v in rng.integers(1, size - s - 1, 2))
            draw_mark(img, x, y, s, rng)
            c = (s + 1) / size
            lines.append(f"0 {(x + s / 2) / size:.6f} {(y + s / 2) / size:.6f} {c:.6f} {c:.6f}\n")
        path = folder / "frames" / f"v{k:05d}.jpg"
        cv2.imwrite(str(path), img)
        path.with_suffix(".txt").write_text("".join(lines))
        paths.append(str(path))
    (folder / "valid.txt").write_text("\n".join(paths) + "\n")
    (folder / "obj.names").write_text("close\n")
    data = folder / "obj.data"
    data.write_text(f"classes = 1\nvalid = {folder / 'valid.txt'}\n"
                    f"names = {folder / 'obj.names'}\n")
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--darknet", default="darknet")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    binary = dialects.resolve_binary(args.darknet)
    dialect = dialects.detect(binary)
    root = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        start = time.perf_counter()
        cfg64, weights = train(root, binary, args.iterations)
        print(f"trained the micro net ({args.iterations} iterations) in "
              f"{time.perf_counter() - start:.1f} s with {binary} ({dialect.value})")
        # (label, evaluator, clip): pjreddie cuts its boxes at the image's edges, so the
        # farm-native path is also timed and scored with the same cut, for a like-for-like mAP
        paths = [("opencv-dnn", "opencv", False), ("opencv-dnn, cut", "opencv", True)]
        paths += [("darknet-valid", "darknet-valid", False)] if dialect is \
            dialects.Dialect.PJREDDIE else [("darknet-map", "darknet-map", False)]
        print(f"\n{'input':<10} {'evaluator':<16} {'images/s':>9} {'seconds':>8} "
              f"{'mAP@0.50':>9} {'detections':>11}")
        for size in (64, 416):
            cfg = micro_cfg(root / f"micro{size}.cfg", max_batches=args.iterations, size=size)
            data = valid_set(root, args.images, size)
            maps = {}
            for label, evaluator, clip in paths:
                best = None
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    result = evaluate_checkpoint(weights, data=data, cfg=cfg, clip=clip,
                                                 evaluator=evaluator, darknet=binary)
                    seconds = time.perf_counter() - t
                    best = seconds if best is None else min(best, seconds)
                maps[label] = result.map
                print(f"{size}x{size:<6} {label:<16} {result.images / best:>9.1f} "
                      f"{best:>8.2f} {result.map:>9.4f} {result.detections:>11}")
            other = paths[2][0]
            print(f"{'':<10} |{other} - opencv-dnn, cut| = "
                  f"{abs(maps[other] - maps['opencv-dnn, cut']) * 100:.4f} mAP points; "
                  f"uncut: {abs(maps[other] - maps['opencv-dnn']) * 100:.2f} (limit 0.5)")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
