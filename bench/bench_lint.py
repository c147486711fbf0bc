"""How fast is the dataset lint? Label files per second per core, against plain reading.

    python bench/bench_lint.py [-n 20000] [--images | --no-images] [--dialect pjreddie]

Generates N label files (1-3 boxes each), their images (tiny JPEGs, so the lint's image
checks have something real to read; --no-images skips them) and a train list in a temp
folder, lints the list twice and reports the second (warm-cache) run. The reference is the
plainest possible reader of the same label files: open().read() and split each line into
five numbers. The goal is at least 20 000 label files per second per core.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from farm.datasets.lint import label_path, lint_list  # noqa: E402


def make_dataset(root: str, n: int, with_images: bool, dialect: str) -> str:
    """N images (one shared JPEG's bytes) and labels, and the list; returns the list path."""
    rng = np.random.default_rng(0)
    images = os.path.join(root, "images")
    os.makedirs(images)
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 255, np.uint8))[1].tobytes()
    entries = []
    for i in range(n):
        image = os.path.join(images, f"{i:06d}.jpg")
        if with_images:
            with open(image, "wb") as f:
                f.write(jpeg)
        label = label_path(image, dialect)
        os.makedirs(os.path.dirname(label), exist_ok=True)
        boxes = rng.uniform(0.2, 0.8, size=(int(rng.integers(1, 4)), 2))
        with open(label, "w") as f:
            f.writelines(f"0 {x:.6f} {y:.6f} 0.074519 0.074519\n" for x, y in boxes)
        entries.append(image)
    list_path = os.path.join(root, "train.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(entries) + "\n")
    return list_path


def reference(labels: list[str]) -> int:
    """The plainest reader: open().read(), split into lines and five numbers each."""
    boxes = 0
    for path in labels:
        with open(path) as f:
            for line in f.read().split("\n"):
                fields = line.split()
                if fields:
                    int(fields[0]), [float(v) for v in fields[1:5]]
                    boxes += 1
    return boxes


def timed(fn, *args, **kwargs):
    """(result, seconds of CPU time): CPU time per core is what 'per core' means."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="label files (default 20000)")
    parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                        help="write images and check them (default: yes)")
    parser.add_argument("--dialect", default="pjreddie")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lint-") as root:
        list_path = make_dataset(root, args.n, args.images, args.dialect)
        labels = [label_path(p, args.dialect) for p in open(list_path).read().split()]
        kwargs = dict(classes=1, dialect=args.dialect, check_images=args.images,
                      net_size=(416, 416), min_images_per_class=None)
        lint_list(list_path, **kwargs)  # cold run: fills the page cache
        report, cpu, wall = timed(lint_list, list_path, **kwargs)
        reference(labels)
        boxes, ref_cpu, ref_wall = timed(reference, labels)
    assert report.labels == args.n and not report.errors, report.findings[:3]
    assert boxes == report.objects
    rate, ref_rate = args.n / cpu, args.n / ref_cpu
    print(f"{args.n} label files, {report.objects} boxes, images checked: {args.images}, "
          f"dialect {args.dialect}, warm cache, single process")
    print(f"  lint      {rate:10,.0f} label files/s per core  ({cpu:.3f} s CPU, "
          f"{wall:.3f} s wall)")
    print(f"  reference {ref_rate:10,.0f} label files/s per core  ({ref_cpu:.3f} s CPU, "
          f"{ref_wall:.3f} s wall)  open().read() + split into 5 numbers")
    print(f"  ratio     {rate / ref_rate:10.2f} × the reference; goal ≥ 20,000/s: "
          f"{'met' if rate >= 20000 else 'NOT met'}")


if __name__ == "__main__":
    main()
