"""What each cfg key must hold: its type, and the range outside which no darknet trains.

darknet reads every value with C's atoi()/atof(): `size=abc` becomes a 0×0 kernel,
`width=1e9` a network one pixel wide, and `width=99999` is read faithfully and then
allocated, gigabyte after gigabyte. None of these is an error to darknet. Here a value is
checked as written: an integer key must hold an integer, a number key a number, and
both must lie in a range that some real network uses. The memory a cfg needs is judged
separately (farm.darknet.memory); these bounds only catch what no machine could train.

Used by `check_cfg` on every section and by `--set` on every override, so a value is
judged the same way wherever it comes from. This module reads no file and imports no
other part of the farm: it only knows values.
"""
from __future__ import annotations

import math
import re

# ---------------------------------------------------------------------------------------
# C's readers

_INT_PREFIX = re.compile(r"\s*[-+]?\d+")
_FLOAT_PREFIX = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def atoi(value: str | None) -> int | None:
    """C atoi(): the leading integer, 0 when there is none; None for a missing value."""
    if value is None:
        return None
    m = _INT_PREFIX.match(value)
    return int(m.group()) if m else 0


def atof(value: str | None) -> float | None:
    """C atof() on the values darknet reads (leading number, 0.0 when there is none)."""
    if value is None:
        return None
    m = _FLOAT_PREFIX.match(value)
    return float(m.group()) if m else 0.0


# ---------------------------------------------------------------------------------------
# The keys

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random", "sgdr")

#: [net] keys darknet reads for detector training (AlexeyAB parse_net_options, pjreddie's
#: and hank-ai's subsets), with the type `--set key=value` must have.
NET_KEYS: dict[str, str] = {
    **dict.fromkeys(
        "batch subdivisions width height channels inputs max_batches burn_in step time_steps "
        "track augment_speed sequential_subdivisions try_fix_nan weights_reject_freq "
        "equidistant_point use_cuda_graph dynamic_minibatch optimized_memory adam max_crop "
        "min_crop flip blur gaussian_noise mixup cutmix mosaic letter_box mosaic_bound "
        "contrastive contrastive_jit_flip contrastive_color unsupervised attention "
        "sgdr_cycle sgdr_mult notruth random center".split(), "int"),
    **dict.fromkeys(
        "learning_rate learning_rate_min momentum decay power scale gamma angle aspect "
        "saturation exposure hue label_smooth_eps resize_step adversarial_lr max_chart_loss "
        "loss_scale ema_alpha workspace_size_limit_MB badlabels_rejection_percentage "
        "num_sigmas_reject_badlabels B1 B2 eps clip max_ratio min_ratio".split(), "float"),
    "steps": "ints",
    "scales": "floats",
    "seq_scales": "floats",
    "policy": "policy",
}

_YOLO_KEYS = {
    **dict.fromkeys("classes num max total".split(), "int"),
    **dict.fromkeys("jitter ignore_thresh truth_thresh random scale_x_y iou_normalizer "
                    "cls_normalizer obj_normalizer beta_nms iou_thresh resize max_delta "
                    "label_smooth_eps".split(), "float"),
    "mask": "ints", "anchors": "floats", "counters_per_class": "ints",
}

#: Keys of the layers the farm's cfgs use whose values are numbers (other keys, and the
#: many rarer layers of AlexeyAB's darknet, are left to check_cfg's other rules).
LAYER_KEYS: dict[str, dict[str, str]] = {
    "convolutional": {
        **dict.fromkeys("filters size stride stride_x stride_y pad padding groups dilation "
                        "batch_normalize binary xnor flipped dot".split(), "int"),
    },
    "maxpool": dict.fromkeys("size stride stride_x stride_y padding maxpool_depth "
                             "out_channels".split(), "int"),
    "upsample": {"stride": "int", "scale": "float"},
    "route": {"layers": "ints", "groups": "int", "group_id": "int"},
    "shortcut": {"from": "ints"},
    "yolo": _YOLO_KEYS,
    "Gaussian_yolo": _YOLO_KEYS,
    "region": {**dict.fromkeys("classes coords num softmax rescore bias_match absolute "
                               "max".split(), "int"),
               **dict.fromkeys("jitter thresh object_scale noobject_scale class_scale "
                               "coord_scale".split(), "float"),
               "anchors": "floats"},
    "connected": {"output": "int", "batch_normalize": "int"},
    "reorg": {"stride": "int", "reverse": "int"},
    "dropout": {"probability": "float"},
}
LAYER_KEYS["conv"] = LAYER_KEYS["convolutional"]
LAYER_KEYS["max"] = LAYER_KEYS["maxpool"]
LAYER_KEYS["conn"] = LAYER_KEYS["connected"]

#: The largest network side (width/height, px) accepted. The seed's screenshots are
#: 1080×2400 and the largest published darknet cfgs 1536: 8192 leaves room and still
#: refuses a typo such as 99999 before the memory estimate has to.
MAX_NET_SIZE = 8192
#: Images per iteration (batch) and chunks (subdivisions); darknet cfgs use 1..128.
MAX_BATCH = 4096
#: Input channels: 1 (grey), 3 (colour), a few more for multispectral images.
MAX_CHANNELS = 64
#: Iterations: darknet's README asks classes×2000; ten million is a month on an H100.
MAX_ITERATIONS = 10_000_000
#: Filters of one convolution (yolov4 uses 1024 at most).
MAX_FILTERS = 16384
#: Kernel, pooling window and stride sides (the widest published: SPP's maxpool 13).
MAX_KERNEL = 64
#: Classes of one detector (yolo9000 has 9418).
MAX_CLASSES = 100_000
#: Anchors of one detection layer (published cfgs use 3 to 9).
MAX_ANCHORS = 1000

#: (lowest, highest) accepted for a key, by section ("net" for [net]) or for every section.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("net", "width"): (1, MAX_NET_SIZE), ("net", "height"): (1, MAX_NET_SIZE),
    ("net", "batch"): (1, MAX_BATCH), ("net", "subdivisions"): (1, MAX_BATCH),
    ("net", "channels"): (1, MAX_CHANNELS), ("net", "max_batches"): (1, MAX_ITERATIONS),
    ("net", "time_steps"): (1, MAX_BATCH), ("net", "learning_rate"): (0, math.inf),
    ("net", "burn_in"): (0, MAX_ITERATIONS), ("net", "momentum"): (0, 1),
    ("net", "decay"): (0, 1), ("net", "angle"): (0, 360), ("net", "hue"): (0, 1),
    ("net", "saturation"): (0, math.inf), ("net", "exposure"): (0, math.inf),
    ("net", "power"): (0, math.inf), ("net", "gamma"): (0, math.inf),
    ("*", "filters"): (1, MAX_FILTERS), ("*", "size"): (1, MAX_KERNEL),
    ("*", "stride_x"): (1, MAX_KERNEL), ("*", "stride_y"): (1, MAX_KERNEL),
    ("*", "padding"): (0, MAX_KERNEL), ("*", "groups"): (1, MAX_FILTERS),
    ("*", "dilation"): (1, MAX_KERNEL), ("*", "group_id"): (0, MAX_FILTERS),
    ("*", "classes"): (1, MAX_CLASSES), ("*", "num"): (1, MAX_ANCHORS),
    ("*", "coords"): (1, 64), ("*", "output"): (1, 1 << 20),
    ("*", "probability"): (0, 1), ("*", "ignore_thresh"): (0, 1), ("*", "jitter"): (0, 10),
    ("*", "random"): (0, 10), ("*", "mask"): (0, MAX_ANCHORS - 1),
    ("*", "anchors"): (0, MAX_NET_SIZE * 1.4),
}
#: `stride` means a step (≥ 1) except in [upsample], where a negative one downsamples.
_STRIDE = (1, MAX_KERNEL)
_UPSAMPLE_STRIDE = (-MAX_KERNEL, MAX_KERNEL)

TYPE_WORDS = {"int": "an integer, e.g. 64", "float": "a number, e.g. 0.001",
              "ints": "integers separated by commas, e.g. 4800,5400",
              "floats": "numbers separated by commas, e.g. .1,.1",
              "policy": "one of " + ", ".join(POLICIES)}


def key_kind(section: str, key: str) -> str | None:
    """'int', 'float', 'ints', 'floats' or 'policy' for a key darknet reads as such;
    None for keys not typed here. `section` is the section's name ('net' for [net])."""
    if section in ("net", "network"):
        return NET_KEYS.get(key)
    return LAYER_KEYS.get(section, {}).get(key)


def key_range(section: str, key: str) -> tuple[float, float] | None:
    if key == "stride" and section not in ("net", "network"):
        return _UPSAMPLE_STRIDE if section == "upsample" else _STRIDE
    sec = "net" if section in ("net", "network") else "*"
    return RANGES.get((sec, key))


def value_problem(section: str, key: str, value: str) -> str | None:
    """What is wrong with `key=value` in a section of that name, as darknet would read
    it; None when nothing is (or the key is not typed here). `value` is as darknet sees
    it (spaces removed); an inline `#` comment is not judged here (check_cfg warns)."""
    kind = key_kind(section, key)
    if kind is None:
        return None
    value = value.split("#", 1)[0]
    if value == "":
        return "empty value" + ("" if kind in ("ints", "floats") else
                                f": darknet reads it as {0 if kind == 'int' else 0.0}")
    if kind == "policy":
        return None if value in POLICIES else f"unknown policy {value!r}"
    items = value.split(",") if kind in ("ints", "floats") else [value]
    whole = kind in ("int", "ints")
    pattern = _INT if whole else _FLOAT
    for n, item in enumerate(items):
        if item == "" and n == len(items) - 1 > 0:
            continue  # `mask=0,1,2,` ends with a comma: darknet stops there
        if item.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            return "not finite"
        if not pattern.fullmatch(item):
            read = atoi(item) if whole else atof(item)
            what = "an integer" if whole else "a number"
            return (f"{item!r} is not {what}: darknet reads it as {read:g}"
                    + (" (atoi stops at the first character that is not a digit)"
                       if whole and _FLOAT.fullmatch(item) else ""))
        number = int(item) if whole else float(item)
        if not math.isfinite(number):
            return "not finite"
        problem = _range_problem(section, key, number)
        if problem:
            return problem
    return None


def _range_problem(section: str, key: str, number: float) -> str | None:
    bounds = key_range(section, key)
    if bounds is None:
        return None
    lo, hi = bounds
    if (key == "learning_rate" and number <= 0) or (lo == 1 and number < 1):
        return "must be greater than 0"
    if number < lo:
        return "must not be negative" if lo == 0 else f"must be at least {_num(lo)}"
    if number > hi:
        return f"{_num(number)} is beyond what darknet can train (at most {_num(hi)})"
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def value_hint(section: str, key: str) -> str:
    """What `key` takes, for a fix: 'width takes an integer in 1..8192'."""
    kind = key_kind(section, key) or "float"
    bounds = key_range(section, key)
    if bounds is None or math.isinf(bounds[1]) or kind not in ("int", "float"):
        return f"{key} takes {TYPE_WORDS[kind]}"
    what = "an integer" if kind == "int" else "a number"
    return f"{key} takes {what} in {_num(bounds[0])}..{_num(bounds[1])}"


def round32(value: int) -> int:
    """The multiple of 32 nearest `value` (at least 32): sizes the YOLO grid lines up with."""
    return max(32, int(round(value / 32)) * 32)
