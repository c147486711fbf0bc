"""A micro network and a tiny close-mark dataset, made on the spot.

The demo, the tests and the benchmarks need a darknet run that takes seconds on two CPU
cores with Debian's darknet (no BLAS): three conv layers and one [yolo] at 64×64 train at
about 40 iterations per second there, and lr 0.05 with burn_in 0 reaches inf/nan within
about ten iterations while 0.01 stays finite (measured with darknet 0.0.0+git20180914).
It lives outside the domain (farm/ never imports it): it is the demo's material and the
tests' fixture, not part of how the farm trains.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from farm.darknet.dialect import Dialect

MICRO_CFG = """\
# micro: a four-layer detector for tests and the demo (one class, 64x64)
[net]
batch=4
subdivisions=1
width={size}
height={size}
channels=3
momentum=0.9
decay=0.0005
learning_rate={learning_rate}
burn_in={burn_in}
max_batches={max_batches}
policy=steps
steps={step1},{step2}
scales=.1,.1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters={filters}
activation=linear

[yolo]
mask=0,1,2
anchors=8,8, 16,16, 24,24
classes={classes}
num=3
jitter=.1
ignore_thresh=.7
truth_thresh=1
random=0
"""


def micro_cfg_text(*, max_batches: int = 60, learning_rate: float = 0.001, burn_in: int = 0,
                   size: int = 64, classes: int = 1, filters: int | None = None) -> str:
    """The micro cfg's text; `filters` may be forced wrong to make a bad cfg on purpose."""
    return MICRO_CFG.format(size=size, learning_rate=learning_rate, burn_in=burn_in,
                            max_batches=max_batches, step1=int(max_batches * 0.8),
                            step2=int(max_batches * 0.9), classes=classes,
                            filters=filters if filters is not None else (classes + 5) * 3)


def micro_cfg(path: str | os.PathLike, **values) -> Path:
    """Write the micro cfg (`micro_cfg_text`'s values) to `path`."""
    Path(path).write_text(micro_cfg_text(**values))
    return Path(path)


def draw_mark(img: np.ndarray, x: int, y: int, s: int, rng: np.random.Generator) -> None:
    colour = tuple(int(c) for c in rng.integers(180, 256, 3))
    t = max(1, s // 8)
    cv2.line(img, (x, y), (x + s, y + s), colour, t, cv2.LINE_AA)
    cv2.line(img, (x + s, y), (x, y + s), colour, t, cv2.LINE_AA)


def micro_dataset(root: str | os.PathLike, *, images: int = 16, size: int = 64,
                  seed: int = 0) -> Path:
    """Images with one drawn × each, YOLO labels beside them, lists and obj.data.

    Returns the obj.data path. Labels are the true boxes of what was drawn.
    """
    root = Path(root)
    img_dir = root / "frames"  # not "images": pjreddie would look for labels in "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "backup").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(images):
        img = (rng.random((size, size, 3)) * 60 + 70).astype(np.uint8)
        s = int(rng.integers(size // 6, size // 3))
        x, y = (int(v) for v in rng.integers(1, size - s - 1, 2))
        draw_mark(img, x, y, s, rng)
        path = img_dir / f"img{i:04d}.jpg"
        cv2.imwrite(str(path), img)
        c = (s + 1) / size
        path.with_suffix(".txt").write_text(
            f"0 {(x + s / 2) / size:.6f} {(y + s / 2) / size:.6f} {c:.6f} {c:.6f}\n")
        paths.append(str(path))
    split = max(1, images // 4)
    (root / "train.txt").write_text("".join(p + "\n" for p in paths[split:]))
    (root / "valid.txt").write_text("".join(p + "\n" for p in paths[:split]))
    (root / "obj.names").write_text("close\n")
    data = root / "obj.data"
    data.write_text(f"classes = 1\ntrain = {root / 'train.txt'}\nvalid = {root / 'valid.txt'}\n"
                    f"names = {root / 'obj.names'}\nbackup = {root / 'backup'}\n")
    return data


#: objectness logit of `random_weights(sparse=True)`: with the heads' kernels at
#: QUIET_GAIN the logits spread by about one unit around it, so a few percent of a tile's
#: boxes pass darknet's 0.005 and hardly any 0.25 (an untrained network's heads find
#: boxes everywhere, tens of thousands a screenshot even at 0.25)
SPARSE_OBJECTNESS = -6.5
QUIET_GAIN = 2.0


def random_weights(cfg_path: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                   dialect: Dialect = Dialect.ALEXEYAB, sparse: bool = False) -> Path:
    """A darknet weights file for a cfg, never trained: He-initialised kernels, batch norm
    at identity (scale 1, mean 0, variance 1), zero biases. For benchmarks and tests that
    need a network of a given shape, not a good one (a cfg darknet here cannot train).
    `sparse`: the convolution before each [yolo] head nearly silent, its objectness bias
    at SPARSE_OBJECTNESS, so boxes are as rare as a trained detector's."""
    from farm.darknet.cfg import Cfg, atoi
    from farm.darknet.weights import layer_weight_counts
    cfg = Cfg.load(cfg_path)
    counts = layer_weight_counts(cfg, dialect=dialect)
    if counts is None:
        raise ValueError(f"{cfg_path}: a layer cannot be sized")
    rng = np.random.default_rng(seed)
    parts = [struct.pack("<iiiQ", 0, 2, 5, 0)]
    layers = cfg.layers
    for k, (layer, count) in enumerate(zip(layers, counts)):
        if not count:
            continue
        if layer.name not in ("convolutional", "conv"):
            raise ValueError(f"{cfg_path}: random weights for [{layer.name}] are not written")
        n = atoi(layer.get("filters", "1"))
        bn = bool(atoi(layer.get("batch_normalize", "0")))
        kernel = count - n - (3 * n if bn else 0)
        parts.append(np.zeros(n, np.float32).tobytes())
        if bn:
            parts += [np.ones(n, np.float32).tobytes(), np.zeros(n, np.float32).tobytes(),
                      np.ones(n, np.float32).tobytes()]
        head = layers[k + 1] if k + 1 < len(layers) else None
        quiet = sparse and head is not None and head.name == "yolo" and not bn
        if quiet:  # biases: per anchor x, y, w, h, objectness, classes
            per = n // max(1, len(head.get("mask", "0").split(",")))
            bias = np.zeros(n, np.float32)
            bias[4::per] = SPARSE_OBJECTNESS
            parts[-1] = bias.tobytes()
        fan_in = kernel // n
        scale = np.sqrt(2 / fan_in) * (QUIET_GAIN if quiet else 1.0)
        parts.append((rng.standard_normal(kernel) * scale).astype(np.float32).tobytes())
    Path(out).write_bytes(b"".join(parts))
    return Path(out)
