"""Synthesis throughput: 416×416 JPEG tiles per second per core, against bare encoding.

Usage: python bench/bench_synth.py [--n 2000] [--canvas 416x416] [--seed 1]

Ratio = synthesis rate / rate of `cv2.imencode('.jpg')` alone on the same images in the
same run, timed image by image in turn so that other load on the machine weighs on both
(goal >= 0.5: synthesis costs at most one more encode). Writing the files is timed
separately (it depends on the disk more than on the code). When albumentations is
importable (the `bench` extra), an equivalent pipeline (paste a mark, then rotate, shift,
scale, brightness/contrast, hue, blur, noise, JPEG) is timed too (goal >= 1.0).
One process, OpenCV limited to one thread: figures are per core.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farm.datasets.synth import SynthSpec, make_close_mark, render, synthesize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--canvas", default="416x416")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    w, h = (int(v) for v in args.canvas.lower().split("x"))
    spec = SynthSpec(canvas=(w, h))
    synthesize(spec, tempfile.mkdtemp(), 200, args.seed + 1)  # warm caches and imports

    memory_s = encode_s = 0.0  # interleaved per image: load drifts hit both alike
    for i in range(args.n):
        t0 = time.perf_counter()
        canvas, _ = render(spec, i, args.seed)
        q = int(np.random.default_rng([args.seed, i]).integers(*spec.jpeg_quality))
        cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, q])
        t1 = time.perf_counter()
        cv2.imencode(".jpg", canvas)
        memory_s += t1 - t0
        encode_s += time.perf_counter() - t1
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        synthesize(spec, out, args.n, args.seed)
        disk_s = time.perf_counter() - t0

    memory_rate, disk_rate, encode_rate = (args.n / s for s in (memory_s, disk_s, encode_s))
    print(f"canvas {w}x{h}, {args.n} images, 1 core")
    print(f"bare cv2.imencode('.jpg') of the same images:    {encode_rate:8.1f} images/s")
    print(f"synthesis, render + JPEG in memory:              {memory_rate:8.1f} images/s"
          f"  ratio {memory_rate / encode_rate:.2f} (goal >= 0.5)")
    print(f"synthesis, + writing image and label files:      {disk_rate:8.1f} images/s"
          f"  ratio {disk_rate / encode_rate:.2f}")
    synth_rate = memory_rate
    _albumentations(spec, args.n, synth_rate)


def _albumentations(spec: SynthSpec, n: int, synth_rate: float) -> None:
    try:
        import albumentations as A
    except ImportError:
        print("albumentations is not installed: comparison skipped "
              "(pip install -e '.[bench]' to include it)")
        return
    w, h = spec.canvas
    mark = make_close_mark(40, "circle")
    pipeline = A.Compose([
        A.Affine(rotate=(-10, 10), shear=(-3, 3), scale=(0.6, 1.2), translate_percent=0.3,
                 border_mode=cv2.BORDER_CONSTANT, p=1.0),
        A.RandomBrightnessContrast(0.15, 0.2, p=1.0),
        A.HueSaturationValue(5, 0, 0, p=1.0),
        A.GaussianBlur(p=0.3),
        A.GaussNoise(p=0.3),
        A.ImageCompression(quality_range=(70, 95), p=1.0),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["cls"]))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n):
        canvas = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
        x, y = (int(v) for v in rng.integers(0, min(w, h) - 40, 2))
        a = mark[:, :, 3:4] / 255.0
        roi = canvas[y:y + 40, x:x + 40]
        roi[:] = (roi * (1 - a) + mark[:, :, :3] * a).astype(np.uint8)
        out = pipeline(image=canvas, bboxes=[(x, y, x + 40, y + 40)], cls=[0])
        cv2.imencode(".jpg", out["image"])
    alb_rate = n / (time.perf_counter() - t0)
    print(f"albumentations equivalent pipeline, in memory:   {alb_rate:8.1f} images/s"
          f"  ratio {synth_rate / alb_rate:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
