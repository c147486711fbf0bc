"""Synthesis throughput: 416×416 JPEG tiles per second per core, against bare encoding.

Usage: python bench/bench_synth.py [--n 2000] [--canvas 416x416] [--seed 1]

Ratio = synthesis rate (render + `cv2.imencode('.jpg')` at the image's quality) / rate of
that `cv2.imencode` alone on the same image at the same quality, timed image by image in
turn so that other load on the machine weighs on both (goal >= 0.5: synthesis costs at
most one more encode). Each image is encoded twice right after its render, and which of
the two timings counts for synthesis alternates from image to image: the first encode
after a render runs on colder caches (~8 % slower here), and neither side gets it always.
Rendering draws into one reused canvas (`render(..., out=)`), as synthesize does.
Writing the files is timed separately (it depends on the disk more than on the code).

When albumentations is importable (the `bench` extra; `.venv-bench`, see below), an
equivalent albumentations pipeline is timed in the same run, block by block in turn with
ours (goal: ours >= 1.0x it): the same kind of generated background with distractors,
1-3 close marks pasted at true scale (24-48 px), then flips, Affine (rotation, shear, a
little stretch; constant border), CoarseDropout as occlusion, RandomBrightnessContrast,
HueSaturationValue, GaussianBlur, GaussNoise with our probabilities, YOLO boxes through
BboxParams, and the same JPEG encode.
albumentations transforms whole images where ours transforms each mark, which is the
point of the comparison. One process, OpenCV limited to one thread, times in CPU seconds
of the process (as bench_lint): figures are per core, and what other processes take of
the machine while it runs does not count.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
    .venv-bench/bin/python bench/bench_synth.py --n 500
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
clock = time.process_time

from farm.datasets.synth import (PROCEDURAL_STYLES, SynthSpec, make_close_mark,  # noqa: E402
                                 render, synthesize)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--canvas", default="416x416")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    w, h = (int(v) for v in args.canvas.lower().split("x"))
    spec = SynthSpec(canvas=(w, h))
    with tempfile.TemporaryDirectory() as warm:
        synthesize(spec, warm, 200, args.seed + 1)  # warm caches and imports
    albu = _albumentations(spec, args.seed)
    qualities = np.random.default_rng([args.seed, 1]).integers(
        spec.jpeg_quality[0], spec.jpeg_quality[1] + 1, args.n).tolist()

    canvas = np.empty((h, w, 3), np.uint8)
    synth_s = encode_s = albu_s = 0.0
    for block in range(0, args.n, BLOCK):
        for i in range(block, min(block + BLOCK, args.n)):
            params = [cv2.IMWRITE_JPEG_QUALITY, qualities[i]]
            t0 = clock()
            render(spec, i, args.seed, out=canvas)
            t1 = clock()
            cv2.imencode(".jpg", canvas, params)
            t2 = clock()
            cv2.imencode(".jpg", canvas, params)
            t3 = clock()
            ours, bare = (t2 - t1, t3 - t2) if i % 2 else (t3 - t2, t2 - t1)
            synth_s += t1 - t0 + ours
            encode_s += bare
        t0 = clock()
        for i in range(block, min(block + BLOCK, args.n)) if albu else ():
            albu(i, [cv2.IMWRITE_JPEG_QUALITY, qualities[i]])
        albu_s += clock() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = clock()
        synthesize(spec, out, args.n, args.seed)
        disk_s = clock() - t0

    synth_rate, disk_rate, encode_rate = (args.n / s for s in (synth_s, disk_s, encode_s))
    print(f"canvas {w}x{h}, {args.n} images, 1 core, JPEG quality "
          f"{spec.jpeg_quality[0]}-{spec.jpeg_quality[1]} (the same for every pipeline)")
    print(f"bare cv2.imencode('.jpg') of the same images:    {encode_rate:8.1f} images/s"
          f"  ({1e3 / encode_rate:.3f} ms)")
    print(f"synthesis, render + JPEG in memory:              {synth_rate:8.1f} images/s"
          f"  ratio {synth_rate / encode_rate:.2f} (goal >= 0.5; render "
          f"{1e3 / synth_rate - 1e3 / encode_rate:.3f} ms)")
    print(f"synthesis, + writing image and label files:      {disk_rate:8.1f} images/s"
          f"  ratio {disk_rate / encode_rate:.2f}")
    if albu:
        albu_rate = args.n / albu_s
        print(f"albumentations equivalent pipeline, in memory:   {albu_rate:8.1f} images/s"
              f"  ours/albumentations {synth_rate / albu_rate:.2f} (goal >= 1.0)")


BLOCK = 50  # albumentations runs between blocks of ours: load drifts hit both alike, and
# neither pipeline evicts the other's caches at every image (that cost ours ~40 %)


def _albumentations(spec: SynthSpec, seed: int):
    """One albumentations image per call, or None (with the reason) when not installed."""
    try:
        import albumentations as A
    except ImportError:
        print("albumentations is not installed: comparison skipped (install the `bench` "
              "extra in its own venv: .venv-bench/bin/pip install -e '.[bench]')")
        return None
    w, h = spec.canvas
    background = dataclasses.replace(spec, negatives=1.0, blur=0.0, noise=0.0)
    lo, hi = (int(v) for v in spec.mark_px)
    bank = [make_close_mark(px, style) for style in PROCEDURAL_STYLES
            for px in range(lo, hi + 1, 2)]  # drawn once: the pipeline pastes, not draws
    shear = np.degrees(np.arctan(spec.shear))
    stretch = (1 - spec.aspect / 2, 1 + spec.aspect / 2)
    pipeline = A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-spec.rotation, spec.rotation), shear=(-shear, shear),
                 scale={"x": stretch, "y": stretch}, border_mode=cv2.BORDER_CONSTANT,
                 fill=0, p=1.0),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.05, 0.25),
                        hole_width_range=(0.05, 0.25), fill="random_uniform",
                        p=spec.occlusion),
        A.RandomBrightnessContrast(spec.brightness, spec.contrast, p=1.0),
        A.HueSaturationValue(spec.hue, 0, 0, p=1.0),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.8, 0.8), p=spec.blur),
        A.GaussNoise(std_range=(spec.noise_level / 255 / 3**.5,) * 2, p=spec.noise),
    ], bbox_params=A.BboxParams(format="yolo", label_fields=["cls"],
                                min_visibility=spec.min_visible), seed=seed)
    rng = np.random.default_rng(seed)
    canvas = np.empty((h, w, 3), np.uint8)

    def one(i: int, params: list) -> None:
        render(background, i, seed, out=canvas)
        boxes = []
        for _ in range(int(rng.integers(spec.marks[0], spec.marks[1] + 1))):
            mark = bank[int(rng.integers(len(bank)))]
            mh, mw = mark.shape[:2]
            x, y = int(rng.integers(0, w - mw)), int(rng.integers(0, h - mh))
            a = mark[:, :, 3:4] * np.float32(1 / 255)
            roi = canvas[y:y + mh, x:x + mw]
            roi[:] = roi * (1 - a) + mark[:, :, :3] * a + 0.5
            boxes.append(((x + mw / 2) / w, (y + mh / 2) / h, mw / w, mh / h))
        out = pipeline(image=canvas, bboxes=boxes, cls=[0] * len(boxes))
        cv2.imencode(".jpg", out["image"], params)
    return one


if __name__ == "__main__":
    main()
