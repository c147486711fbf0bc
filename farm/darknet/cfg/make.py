"""make_cfg: the training cfg for N classes, generated from an upstream base cfg."""
from __future__ import annotations

import numbers

from farm.darknet.cfg.model import Cfg, Section, head_filters, head_masks, head_num
from farm.darknet.cfg.values import round32
from farm.errors import BadInput


def make_cfg(base: Cfg, *, classes: int, width: int | None = None, height: int | None = None,
             batch: int = 64, subdivisions: int = 16, max_batches: int | None = None,
             train_images: int = 0, learning_rate: float | None = None,
             burn_in: int | None = None, anchors=None) -> Cfg:
    """The training cfg for `classes` classes, generated from an upstream `base`.

    Sets classes in every detection layer and filters in the convolution before it, the
    training batch/subdivisions, max_batches (default max(classes×2000, train_images,
    6000)) and steps at 80 % and 90 %; optional anchors (num and masks follow). Comments
    and order are kept, so a diff against the base shows exactly what changed.
    """
    require_int("classes", classes, minimum=1)
    _require_batch(batch, subdivisions)
    cfg = base.copy()
    if cfg.net is None:
        raise BadInput("the base cfg does not start with [net]", path=base.path,
                       hint="use an upstream darknet cfg as the base")
    heads = cfg.output_layers()
    if not heads:
        raise BadInput("the base cfg has no [yolo] or [region] layer", path=base.path,
                       hint="use a detector cfg as the base (yolov3-tiny, yolov4-tiny-custom)")
    for key, value in (("width", width), ("height", height)):
        if value is not None:
            _require_size(key, value)
            cfg.set_net(key, value)
    cfg.set_net("batch", batch)
    cfg.set_net("subdivisions", subdivisions)
    _set_schedule(cfg, classes, max_batches, train_images)
    if learning_rate is not None:
        if not learning_rate > 0:
            raise BadInput(f"learning_rate={learning_rate} must be greater than 0",
                           hint="0.001 is darknet's usual value")
        cfg.set_net("learning_rate", f"{learning_rate:g}")
    if burn_in is not None:
        require_int("burn_in", burn_in, minimum=0)
        cfg.set_net("burn_in", burn_in)
    if anchors is not None:
        _set_anchors(cfg, heads, anchors)
    for head in heads:
        head.set("classes", classes)
        _set_filters(cfg, head)
    return cfg


def require_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise BadInput(f"{name}={value!r} must be an integer ≥ {minimum}")


def _require_batch(batch: int, subdivisions: int) -> None:
    require_int("batch", batch, minimum=1)
    require_int("subdivisions", subdivisions, minimum=1)
    if batch == 1 and subdivisions == 1:
        raise BadInput("batch=1 subdivisions=1 is darknet's test-time setting, not a "
                       "training one", hint="use batch=64 subdivisions=16 (or 8/2 on a CPU)")
    if batch % subdivisions:
        raise BadInput(f"batch={batch} is not a multiple of subdivisions={subdivisions}",
                       hint="darknet trains batch/subdivisions images at a time; e.g. "
                            "batch=64 subdivisions=16")


def _require_size(key: str, value) -> None:
    require_int(key, value, minimum=32)
    if value % 32:
        raise BadInput(f"{key}={value} is not a multiple of 32: the YOLO grid (stride 32) "
                       "would not line up with the image",
                       hint=f"use {key}={round32(value)}")


def default_max_batches(classes: int, train_images: int = 0) -> int:
    """darknet's README rule: classes×2000, at least the training images and 6000."""
    return max(classes * 2000, train_images, 6000)


def _set_schedule(cfg: Cfg, classes: int, max_batches: int | None, train_images: int) -> None:
    if max_batches is None:
        max_batches = default_max_batches(classes, train_images)
    require_int("max_batches", max_batches, minimum=1)
    cfg.set_net("max_batches", max_batches)
    cfg.set_net("policy", "steps")
    cfg.set_net("steps", f"{int(max_batches * .8)},{int(max_batches * .9)}")
    if len(cfg.scales) != 2:
        cfg.set_net("scales", ".1,.1")


def _set_filters(cfg: Cfg, head: Section) -> None:
    conv = cfg.conv_before(head)
    if conv is None:
        prev = cfg.sections[head.index - 1]
        raise BadInput(f"{head.type} at line {head.line} follows {prev.type}, not a "
                       "[convolutional], so its filters cannot be set", path=cfg.path,
                       line=head.line, hint="use an upstream detector cfg as the base")
    conv.set("filters", head_filters(head))


def _set_anchors(cfg: Cfg, heads: list[Section], anchors) -> None:
    """Write `anchors` (w, h pairs in network pixels) into every head, keeping the rule
    that coarser heads (those with the larger anchor indices) take the larger anchors."""
    pairs = _anchor_pairs(anchors)
    pairs.sort(key=lambda wh: wh[0] * wh[1])
    yolo = [h for h in heads if h.name != "region"]
    if yolo and len(pairs) % len(yolo):
        raise BadInput(f"{len(pairs)} anchors cannot be shared by {len(yolo)} [yolo] layers",
                       hint=f"ask for a multiple of {len(yolo)} anchors, e.g. "
                            f"{3 * len(yolo)}")
    text = ",  ".join(f"{w:g},{h:g}" for w, h in pairs)
    region_text = ",  ".join(f"{w / 32:.4f},{h / 32:.4f}" for w, h in pairs)
    order = sorted(yolo, key=lambda h: max(head_masks(h) or [head_num(h) - 1]))
    per = len(pairs) // len(yolo) if yolo else 0
    for rank, head in enumerate(order):
        head.set("anchors", text)
        head.set("num", len(pairs))
        head.set("mask", ",".join(str(i) for i in range(rank * per, (rank + 1) * per)))
    for head in heads:
        if head.name == "region":  # v2 anchors are in grid cells (32 px)
            head.set("anchors", region_text)
            head.set("num", len(pairs))


def _anchor_pairs(anchors) -> list[tuple[float, float]]:
    import numpy as np  # here: reading and checking cfgs does not need numpy
    arr = np.asarray(anchors, dtype=float).reshape(-1, 2) if len(anchors) else np.empty((0, 2))
    if not len(arr) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise BadInput("anchors must be positive (width, height) pairs in network pixels",
                       hint="e.g. [(10, 14), (23, 27), (37, 58)]")
    return [(float(w), float(h)) for w, h in arr]
