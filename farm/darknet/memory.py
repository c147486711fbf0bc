"""How much memory darknet needs to train a cfg, known before it allocates any.

darknet allocates every buffer of the network when it parses the cfg and touches them
at the first iteration, so a cfg that cannot fit gets far (`width=99999` took 6.3 GB of
RSS in 53 s before anything failed) and then fails or drags the host into swap. The
estimate adds what darknet's make_*_layer functions allocate (pjreddie's and AlexeyAB's
CPU code; the CUDA build mirrors the same buffers on the GPU):

- per layer, for the mini-batch (batch/subdivisions images at a time): the output and
  its delta; a convolution with batch_normalize also keeps x and x_norm, a maxpool its
  int indexes, and AlexeyAB keeps the input of swish/mish activations;
- the parameters and their updates (Adam's two moments when `adam=1`);
- the im2col workspace of the largest convolution that uses it (1×1 kernels do not);
- the training images: the batch being trained and the next one loading (the whole
  `batch` each), at network size, with their 90 truth boxes;
- the process itself.

At the largest size `random=` resizes to (pjreddie: up to 608×608; AlexeyAB: 1.4× the
cfg's, or `random=X`). Calibrated against Debian's darknet's peak RSS in
bench/bench_memory.py (the figures are in the README).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from farm.darknet.cfg import Cfg, atof, atoi
from farm.darknet.dialect import Dialect
from farm.darknet.weights import Layer, layers_of

FLOAT = 4
#: Truth boxes darknet keeps per training image (max_boxes, 90 in every dialect), 5 floats each.
TRUTH_FLOATS = 90 * 5
#: The process before the network: Debian's darknet with the OpenCV libraries it links
#: holds 77 MB before it reads the cfg, 81 MB with the lists and loader threads of a
#: training (bench/bench_memory.py: a one-filter network at 32×32 peaks at 81.3 MB).
PROCESS_BYTES = 81 << 20
#: What the CUDA runtime takes on a GPU before darknet allocates (context, kernels). Not
#: measured here (no GPU): a margin for a context of a few hundred MB.
CUDA_CONTEXT_BYTES = 600 << 20
#: pjreddie resizes a `random=1` network to 320..608 px squares, whatever the cfg says.
PJREDDIE_RANDOM_MAX = 608
#: AlexeyAB's `random=1` scales the cfg's size by up to this factor.
ALEXEYAB_RANDOM_SCALE = 1.4
_KEEPS_ACTIVATION_INPUT = frozenset({"swish", "mish", "hard_mish"})


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes darknet needs for one training process of a cfg."""

    width: int  # the network size the estimate is at (the largest random resize)
    height: int
    batch: int
    mini_batch: int  # images through the network at a time: batch / subdivisions
    activations: int
    parameters: int
    workspace: int
    images: int  # the loaded training batches (host memory)
    process: int

    @property
    def host(self) -> int:
        """On a CPU: everything."""
        return self.activations + self.parameters + self.workspace + self.images + \
            self.process

    @property
    def gpu(self) -> int:
        """On a GPU: the network's buffers and the CUDA context (the images stay in RAM)."""
        return self.activations + self.parameters + self.workspace + CUDA_CONTEXT_BYTES

    def describe(self, on_gpu: bool = False) -> str:
        total = self.gpu if on_gpu else self.host
        parts = [f"activations {size_text(self.activations)} for {self.mini_batch} "
                 f"image(s) at a time", f"weights {size_text(self.parameters)}",
                 f"workspace {size_text(self.workspace)}"]
        parts.append("CUDA context" if on_gpu else f"loaded images {size_text(self.images)}")
        return (f"about {size_text(total)} at {self.width}×{self.height}, batch "
                f"{self.batch}/subdivisions {self.batch // max(self.mini_batch, 1)} "
                f"({', '.join(parts)})")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])i?B\s*$", re.I)


def parse_size(text: str) -> int | None:
    """Bytes of `24GB`, `80 GiB`, `512MB` (binary units, as size_text prints them); None
    when `text` is not a positive size with its unit."""
    m = _SIZE.match(str(text))
    if m is None or float(m.group(1)) <= 0:
        return None
    return int(float(m.group(1)) * (1 << (10 * " KMGT".index(m.group(2).upper()))))


def size_text(n: float) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def train_size(cfg: Cfg, dialect: Dialect = Dialect.PJREDDIE) -> tuple[int, int]:
    """The largest width×height training reaches: random= resizes the network."""
    w, h = atoi(cfg.net_get("width", "0")) or 0, atoi(cfg.net_get("height", "0")) or 0
    heads = cfg.output_layers()
    random = atof(heads[-1].get("random", "0")) if heads else 0.0
    if not random:
        return w, h
    if Dialect.of(dialect) is Dialect.PJREDDIE:
        return max(w, PJREDDIE_RANDOM_MAX), max(h, PJREDDIE_RANDOM_MAX)
    scale = ALEXEYAB_RANDOM_SCALE if random == 1 else random
    step = int(atof(cfg.net_get("resize_step", "32")) or 32)
    return (max(w, int(round(scale * w / step + 1)) * step),
            max(h, int(round(scale * h / step + 1)) * step))


def estimate(cfg: Cfg, *, dialect: Dialect = Dialect.PJREDDIE) -> MemoryEstimate | None:
    """What training `cfg` needs at its batch/subdivisions, at the largest size it
    reaches; None when a layer cannot be sized (farm.darknet.weights.layers_of)."""
    d = Dialect.of(dialect)
    width, height = train_size(cfg, d)
    if width <= 0 or height <= 0:
        return None
    layers = layers_of(cfg, dialect=d, width=width, height=height)
    if layers is None:
        return None
    batch = max(cfg.batch or 1, 1)
    mini = max(batch // max(cfg.subdivisions or 1, 1), 1)
    channels = atoi(cfg.net_get("channels", "3")) or 3
    adam = bool(atoi(cfg.net_get("adam", "0")))
    per_image = sum(_activation_floats(layer, d) for layer in layers) + width * height * channels
    params = sum(layer.params for layer in layers)
    return MemoryEstimate(
        width=width, height=height, batch=batch, mini_batch=mini,
        activations=FLOAT * mini * (per_image + TRUTH_FLOATS),
        parameters=FLOAT * params * (4 if adam else 2),
        workspace=FLOAT * max((_workspace_floats(layer) for layer in layers), default=0),
        images=FLOAT * 2 * batch * (width * height * channels + TRUTH_FLOATS),
        process=PROCESS_BYTES)


def _activation_floats(layer: Layer, d: Dialect) -> int:
    """Floats one image keeps in this layer while training (output, delta and the rest)."""
    name, out = layer.section.name, layer.out.size
    if name in ("convolutional", "conv", "connected", "conn"):
        buffers = 2 + (2 if atoi(layer.section.get("batch_normalize", "0")) else 0)
        keeps_input = layer.section.get("activation") in _KEEPS_ACTIVATION_INPUT
        if d is not Dialect.PJREDDIE and keeps_input:
            buffers += 1
        return buffers * out
    if name in ("maxpool", "max"):
        return 3 * out  # output, delta, and the int index of each maximum
    return 2 * out


def _workspace_floats(layer: Layer) -> int:
    """im2col's buffer for one image of a convolution (1×1 kernels multiply in place)."""
    if layer.section.name not in ("convolutional", "conv"):
        return 0
    size = atoi(layer.section.get("size", "1")) or 1
    if size == 1:
        return 0
    groups = max(atoi(layer.section.get("groups", "1")) or 1, 1)
    return layer.out.h * layer.out.w * size * size * (layer.inp.c // groups)
