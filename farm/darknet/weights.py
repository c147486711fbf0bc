"""darknet `.weights` files: the header, the iteration they hold, and whether they fit a cfg.

darknet loads weights layer by layer and stops quietly at the end of the file, so a
truncated copy, or weights written for another cfg (other classes, other filters), load
without an error and give a network that detects nothing. Checking the size against the
cfg before a run or an evaluation catches both.

File layout (darknet.md §4): int32 major, minor, revision; then `seen` (images trained on)
as uint64 when major*10+minor >= 2, else uint32; then float32 parameters, layer after
layer. A [convolutional] layer stores biases, then (with batch_normalize) scales, rolling
means and rolling variances, then its kernels.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from itertools import accumulate

from farm.darknet.cfg import Cfg, Section, atoi, cfg_dialect
from farm.darknet.dialect import Dialect
from farm.errors import BadInput, Finding, Severity

FLOAT_BYTES = 4
HEADER_BYTES = 20  # what every current darknet writes (0.2.x: 12 bytes + uint64 seen)
#: AlexeyAB's and hank-ai's header revision (`0.2.5`); pjreddie's darknet writes `0.2.0`.
ALEXEYAB_REVISION = 5
_TEXT_PROBE = 64  # bytes read to tell a text file from weights

#: Layers that store no parameters.
_NO_WEIGHTS = frozenset(
    "maxpool max avgpool avg local_avgpool local_avg route shortcut upsample yolo "
    "Gaussian_yolo region detection reorg reorg3d dropout softmax soft cost crop activation "
    "logistic l2norm sam scale_channels empty silence".split())
_PARTIAL_NAME = re.compile(r"\.conv\.(\d+)$")


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int  # images trained on: iteration × cfg batch
    header_size: int  # bytes before the first float: 20, or 16 for very old files


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """The header of a weights file; BadInput when it is unreadable, too short, or text
    (a Git LFS pointer, an HTML error page saved under the weights' name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_TEXT_PROBE)
    except OSError as e:
        raise BadInput(f"cannot read weights file: {e.strerror}", path=str(path)) from None
    if not head:
        raise BadInput("empty weights file (0 bytes): darknet would train from scratch "
                       "without a word", path=str(path),
                       hint="copy the file again, or leave WEIGHTS out to train from scratch")
    text = _text_start(head)
    if text is not None:
        lfs = head.startswith(b"version https://git-lfs")
        raise BadInput(f"a text file, not darknet weights (it starts {text!r})",
                       path=str(path),
                       hint="it is a Git LFS pointer: fetch the real file (git lfs pull)"
                       if lfs else "pass the binary .weights file darknet wrote")
    if len(head) < 12:
        raise BadInput(f"not a darknet weights file: {len(head)} bytes, shorter than the "
                       "12-byte version header", path=str(path),
                       hint="the copy is truncated or empty; copy it again")
    major, minor, revision = struct.unpack("<iii", head[:12])
    wide = major * 10 + minor >= 2
    size = 20 if wide else 16
    if len(head) < size:
        raise BadInput(f"truncated weights header: {len(head)} of {size} bytes",
                       path=str(path), hint="copy the file again")
    (seen,) = struct.unpack("<Q" if wide else "<I", head[12:size])
    return WeightsHeader(major, minor, revision, seen, size)


def _text_start(head: bytes) -> str | None:
    """The first line of `head` when it is text; None for binary. darknet's header
    starts with major version 0 (four zero bytes), which no text has."""
    if any(b < 32 and b not in (9, 10, 13) for b in head):
        return None
    line = head.decode("utf-8", errors="replace").strip().splitlines()
    return (line[0] if line else "")[:60]


def iteration_of(path: str | os.PathLike, batch: int, subdivisions: int = 1) -> int:
    """The training iteration a weights file holds: seen // batch.

    `batch` is the cfg's `batch=` (images per iteration); darknet counts `seen` in images,
    `iteration × batch` (checked on Debian's darknet: batch=4 subdivisions=2, 3
    iterations → seen 12), so `subdivisions` does not change the count; it is only checked
    to divide `batch`, as darknet requires.
    """
    if batch < 1 or subdivisions < 1 or batch % subdivisions:
        raise BadInput(f"batch={batch} subdivisions={subdivisions}: batch must be a positive "
                       "multiple of subdivisions", hint="pass the cfg's batch= and "
                                                        "subdivisions= values")
    return read_header(path).seen // batch


# ---------------------------------------------------------------------------------------
# Sizing a cfg


@dataclass(frozen=True)
class Shape:
    h: int
    w: int
    c: int

    @property
    def size(self) -> int:
        return self.h * self.w * self.c


@dataclass(frozen=True)
class Layer:
    """One layer as darknet builds it: its section, its stored parameters, its input and
    output shapes (per image)."""

    section: Section
    params: int
    inp: Shape
    out: Shape


def layers_of(cfg: Cfg, *, dialect: Dialect = Dialect.PJREDDIE, width: int | None = None,
              height: int | None = None) -> list[Layer] | None:
    """The layers darknet builds from `cfg` (at `width`×`height` when given, as after a
    random resize), in file order; None when a layer cannot be sized here.

    The dialect matters: pjreddie ignores `groups=` on [route], so yolov4-tiny's layers
    after a grouped route take twice the channels there.
    """
    d = Dialect.of(dialect)
    net = cfg.net
    if net is None:
        return None
    shape = Shape(height or atoi(net.get("height", "0")), width or atoi(net.get("width", "0")),
                  atoi(net.get("channels", "0")))
    outputs: list[Shape] = []
    layers: list[Layer] = []
    for i, section in enumerate(cfg.layers):
        sized = _size_layer(section, shape, outputs, i, d)
        if sized is None:
            return None
        count, out = sized
        layers.append(Layer(section, count, shape, out))
        outputs.append(out)
        shape = out
    return layers


def layer_weight_counts(cfg: Cfg, *, dialect: Dialect = Dialect.PJREDDIE) -> list[int] | None:
    """Float32 parameters per layer, in file order; None when a layer cannot be sized."""
    layers = layers_of(cfg, dialect=dialect)
    return None if layers is None else [layer.params for layer in layers]


def expected_weights_bytes(cfg: Cfg, *, dialect: Dialect = Dialect.PJREDDIE) -> int | None:
    """The size of a complete weights file for `cfg` (20-byte header); None when a layer
    type cannot be sized."""
    counts = layer_weight_counts(cfg, dialect=dialect)
    return None if counts is None else HEADER_BYTES + FLOAT_BYTES * sum(counts)


def _size_layer(layer: Section, inp: Shape, outputs: list[Shape], index: int,
                d: Dialect) -> tuple[int, Shape] | None:
    name = layer.name
    if name in ("convolutional", "conv"):
        return _size_conv(layer, inp)
    if name in ("connected", "conn"):
        out = atoi(layer.get("output", "1"))
        bn = 3 * out if atoi(layer.get("batch_normalize", "0")) else 0
        return out + out * inp.h * inp.w * inp.c + bn, Shape(1, 1, out)
    if name == "batchnorm":
        return 3 * inp.c, inp
    if name not in _NO_WEIGHTS:
        return None
    if name == "shortcut" and layer.get("weights_type", "none") != "none":
        return None
    shape = _shape_without_weights(layer, inp, outputs, index, d)
    return None if shape is None else (0, shape)


#: [convolutional] options that change what is stored (XNOR, shared or deformable kernels).
_UNSIZABLE_CONV = ("binary", "xnor", "antialiasing", "sway", "rotate", "stretch",
                   "stretch_sway")


def _size_conv(layer: Section, inp: Shape) -> tuple[int, Shape] | None:
    if layer.option("share_index") is not None or \
            any(atoi(layer.get(k, "0")) for k in _UNSIZABLE_CONV):
        return None
    n = atoi(layer.get("filters", "1"))
    size = atoi(layer.get("size", "1"))
    groups = max(atoi(layer.get("groups", "1")), 1)
    stride = atoi(layer.get("stride", "1")) or 1
    stride_x = max(atoi(layer.get("stride_x", str(stride))), 1)
    stride_y = max(atoi(layer.get("stride_y", str(stride))), 1)
    dilation = atoi(layer.get("dilation", "1")) if size > 1 else 1
    padding = size // 2 if atoi(layer.get("pad", "0")) else atoi(layer.get("padding", "0"))
    kernel = dilation * (size - 1) + 1
    out = Shape((inp.h + 2 * padding - kernel) // stride_y + 1,
                 (inp.w + 2 * padding - kernel) // stride_x + 1, n)
    bn = 3 * n if atoi(layer.get("batch_normalize", "0")) else 0
    return n + bn + (inp.c // groups) * n * size * size, out


def _shape_without_weights(layer: Section, inp: Shape, outputs: list[Shape], index: int,
                           d: Dialect) -> Shape | None:
    name = layer.name
    if name in ("maxpool", "max"):
        stride = atoi(layer.get("stride", "1")) or 1
        size = atoi(layer.get("size", str(stride)))
        padding = atoi(layer.get("padding", str(size - 1)))
        return Shape((inp.h + padding - size) // stride + 1,
                      (inp.w + padding - size) // stride + 1, inp.c)
    if name in ("avgpool", "avg"):
        return Shape(1, 1, inp.c)
    if name == "route":
        return _route_shape(layer, outputs, index, d)
    if name == "upsample":
        s = atoi(layer.get("stride", "2")) or 1
        return Shape(inp.h // -s, inp.w // -s, inp.c) if s < 0 else \
            Shape(inp.h * s, inp.w * s, inp.c)
    if name in ("reorg", "reorg3d"):
        s = atoi(layer.get("stride", "1")) or 1
        return Shape(inp.h // s, inp.w // s, inp.c * s * s)
    return inp


def _route_shape(layer: Section, outputs: list[Shape], index: int, d: Dialect) -> Shape | None:
    refs = [atoi(v) for v in layer.get("layers", "").split(",") if v.strip()]
    refs = [r + index if r < 0 else r for r in refs]
    if not refs or any(not 0 <= r < index for r in refs):
        return None  # check_cfg reports the bad reference
    shapes = [outputs[r] for r in refs]
    c = sum(s.c for s in shapes)
    if d.honours_groups:
        c //= max(atoi(layer.get("groups", "1")), 1)
    return Shape(shapes[0].h, shapes[0].w, c)


# ---------------------------------------------------------------------------------------
# check_weights


def check_weights(path: str | os.PathLike, cfg: Cfg, *, for_inference: bool = True,
                  dialect=None, reader=None) -> list[Finding]:
    """Whether the weights file at `path` fits `cfg`; every problem as a Finding.

    Refused: an empty, text or short file, a truncated one, weights written for another
    cfg (a size no prefix of this cfg's layers has), and, for inference, `*.conv.N`
    partial files (a pretrained backbone only: its detection heads are missing). For
    training, the first N layers of the cfg are a valid start when darknet partial made
    them (`seen` is 0, and a `.conv.N` name says N); a training checkpoint cut at a layer
    boundary is a truncated copy.

    The sizes are counted as the darknet that wrote the file builds the network:
    `dialect` when known (the run's recorded one), else from the file and the cfg (see
    `weights_dialects`), never from the darknet installed here. `reader`: the dialect of
    the program that will load them, when its network differs (pjreddie ignores [route]
    groups=; OpenCV honours them like AlexeyAB).
    """
    path = os.fspath(path)
    try:
        header = read_header(path)
        size = os.path.getsize(path)
    except BadInput as e:
        return [Finding(path, None, e.reason, e.hint or "copy the file again")]
    except OSError as e:
        return [Finding(path, None, f"cannot read weights file: {e.strerror}",
                        "check the path and permissions")]
    if not (0 <= header.major < 1000 and 0 <= header.minor < 1000):
        return [Finding(path, None, f"not a darknet weights file (version "
                                    f"{header.major}.{header.minor}.{header.revision})",
                        "pass a .weights file written by darknet")]
    out: list[Finding] = []
    if for_inference and _PARTIAL_NAME.search(os.path.basename(path)):
        out.append(Finding(path, None, "a *.conv.N file holds only the first N pretrained "
                           "layers (a backbone), not the detection heads: it detects nothing",
                           "use it to start training; for detection use a trained "
                           "_best/_final/_last weights file"))
    fit = None
    problems: list[tuple[str, str]] = []
    for d, counts in _layouts(cfg, weights_dialects(header, cfg, dialect)):
        if counts is None:
            out.append(Finding(path, None, f"{cfg.path} has a layer type whose weights "
                               "cannot be sized here, so the file size was not checked",
                               "check it by loading it with darknet", Severity.WARNING))
            return out
        problem = _size_problem(size - header.header_size, counts, cfg, for_inference,
                                header, os.path.basename(path))
        if problem is None:
            fit = d
            break
        problems.append(problem)
    if fit is None:
        out.append(Finding(path, None, *problems[0]))
    elif reader is not None and _counts(cfg, reader) != _counts(cfg, fit):
        out.append(Finding(path, None, f"laid out for the network {_family(fit).who} "
                           f"builds from {cfg.path}; {_family(reader).who} builds another "
                           "one from it ([route] groups= " + ("honoured" if _family(reader)
                                                             .honours_groups else "ignored")
                           + "), so the weights would land in the wrong layers",
                           "evaluate with --evaluator opencv (it reads AlexeyAB's layout), "
                           "or with the darknet that trained them"))
    return out


def _family(dialect: Dialect) -> Dialect:
    """pjreddie, or AlexeyAB for the two that honour [route] groups (and count alike)."""
    return Dialect.ALEXEYAB if Dialect.of(dialect).honours_groups else Dialect.PJREDDIE


def weights_dialects(header: WeightsHeader, cfg: Cfg, dialect=None) -> list[Dialect]:
    """The dialects whose layout the file may have, most likely first: the one given; else
    AlexeyAB's when the header says `0.2.5` (pjreddie writes `0.2.0`); else both, the
    cfg's own (farm.darknet.cfg.cfg_dialect) first."""
    if dialect is not None:
        return [_family(dialect)]
    if header.revision == ALEXEYAB_REVISION:
        return [Dialect.ALEXEYAB]
    first = cfg_dialect(cfg) or Dialect.PJREDDIE
    return [first, Dialect.PJREDDIE if first is Dialect.ALEXEYAB else Dialect.ALEXEYAB]


def _counts(cfg: Cfg, dialect) -> list[int] | None:
    return layer_weight_counts(cfg, dialect=_family(dialect))


def _layouts(cfg: Cfg, dialects: list[Dialect]):
    """(dialect, counts) for each dialect whose counts differ from the ones before."""
    seen = []
    for d in dialects:
        counts = _counts(cfg, d)
        if counts not in seen or counts is None:
            seen.append(counts)
            yield d, counts


def _size_problem(payload: int, counts: list[int], cfg: Cfg, for_inference: bool,
                  header: WeightsHeader, name: str) -> tuple[str, str] | None:
    total = sum(counts)
    if payload % FLOAT_BYTES:
        return (f"truncated: {payload} bytes of parameters is not a whole number of "
                "float32 values", "copy the file again")
    floats = payload // FLOAT_BYTES
    if floats == total:
        return None
    if floats == 0:
        return ("holds no parameters, only the header: darknet would start from random "
                "weights without a word", "copy the file again, or leave it out to train "
                                          "from scratch")
    if floats > total:
        return (f"written for another cfg: it holds {floats} parameters, {floats - total} "
                f"more than {cfg.path} needs ({total}){_as_built(cfg, counts)}",
                "use the cfg these weights were trained with (same layers, classes, "
                "filters)")
    ends = list(accumulate(counts))
    if floats in ends:
        return _prefix_problem(ends, floats, cfg, for_inference, header, name)
    inside = next(i for i, end in enumerate(ends) if end > floats)
    layer = cfg.layers[inside]
    return (f"does not fit {cfg.path}: its {floats} parameters end inside layer {inside} "
            f"({layer.type} at line {layer.line}), not at a layer boundary (the cfg needs "
            f"{total}{_as_built(cfg, counts)}): a truncated copy, or weights written for "
            "another cfg (other classes, filters or width)",
            "copy the file again, or use the cfg these weights were trained with")


def _prefix_problem(ends: list[int], floats: int, cfg: Cfg, for_inference: bool,
                    header: WeightsHeader, name: str) -> tuple[str, str] | None:
    """A file holding exactly the first layers of the cfg: a backbone made by `darknet
    partial` (seen 0; a `.conv.N` name gives N), or a truncated checkpoint."""
    layers = ends.index(floats) + 1
    held = f"holds only the first {layers} of {len(ends)} layers of {cfg.path}"
    if for_inference:
        return (f"{held}: a partial or truncated file, the rest would stay random",
                "use complete trained weights (_best/_final/_last) for detection")
    named = _PARTIAL_NAME.search(name)
    if named:
        n = int(named.group(1))
        if not 1 <= n <= len(ends) or ends[n - 1] != floats:
            return (f"named .conv.{n} but {held}: a backbone of another cfg, or a "
                    "truncated copy", f"use the .conv file made for {cfg.path}'s "
                                      "backbone (darknet partial CFG WEIGHTS OUT N)")
        return None
    if header.seen:
        return (f"{held}, yet it was written while training (seen={header.seen} images): "
                "a truncated copy of a checkpoint", "copy the file again")
    return None


def _as_built(cfg: Cfg, counts: list[int]) -> str:
    """Which dialect's network the count is for, when the dialects disagree."""
    pjreddie = layer_weight_counts(cfg, dialect=Dialect.PJREDDIE)
    if pjreddie == layer_weight_counts(cfg, dialect=Dialect.ALEXEYAB):
        return ""
    who = Dialect.PJREDDIE if counts == pjreddie else Dialect.ALEXEYAB
    return f", as {who.who} builds it"


def cut_short(path: str | os.PathLike, cfg: Cfg, dialect=None) -> str | None:
    """Why a weights file darknet just wrote for `cfg` is not complete (None when it is).
    darknet never checks its writes: on a full disk, or killed mid-write, it leaves a
    short file and carries on."""
    errors = [f for f in check_weights(path, cfg, dialect=dialect) if f.severity is Severity.ERROR]
    return errors[0].reason if errors else None
