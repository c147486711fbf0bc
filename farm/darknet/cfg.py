"""darknet cfg files: read them as darknet does, edit them without losing a byte.

The seed's cfgs were edited by hand (`filters=(classes+5)*3` in some heads, `classes=` in
others, the test-time `batch=1` left in) and darknet either aborted or trained the wrong
network in silence. Here a cfg is generated from an upstream base (`make_cfg`) and checked
against darknet's own rules (`check_cfg`) before any darknet process sees it.

Parsing follows darknet's read_cfg(): every line is stripped of spaces and tabs (so
`max_batches = 6000` is the key `max_batches`), `#` and `;` start comment lines, a line
starting with `[` opens a section whose type is the whole stripped line, and keys are
case-sensitive. A `Cfg` keeps the original lines, so `dumps()` gives back the file
byte-for-byte until something is changed, and edits touch only the lines they change.
"""
from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from farm.darknet.cfgvalues import (NET_KEYS, POLICIES, atof, atoi, value_hint,
                                    value_problem)
from farm.darknet.dialect import Dialect
from farm.errors import BadInput, Finding, Severity

# ---------------------------------------------------------------------------------------
# What darknet knows

#: Section types each dialect's parser accepts (string_to_layer_type: exact, case-sensitive).
#: pjreddie's list was read from Debian's /usr/bin/darknet; AlexeyAB's from src/parser.c.
PJREDDIE_SECTIONS = frozenset(
    "net network convolutional conv deconvolutional deconv local activation logistic "
    "l2norm crnn gru lstm rnn connected conn maxpool max reorg avgpool avg dropout lrn "
    "normalization batchnorm softmax soft route upsample shortcut crop cost detection "
    "region yolo iseg".split())
ALEXEYAB_SECTIONS = frozenset(
    "net network convolutional conv local activation crnn gru lstm conv_lstm history rnn "
    "connected conn maxpool max local_avgpool local_avg reorg3d reorg avgpool avg dropout "
    "lrn normalization batchnorm softmax soft contrastive route upsample shortcut "
    "scale_channels sam crop cost detection region yolo Gaussian_yolo empty silence "
    "implicit".split())

PJREDDIE_ACTIVATIONS = frozenset(
    "logistic loggy relu elu selu relie plse hardtan lhtan linear ramp leaky tanh "
    "stair".split())
ALEXEYAB_ACTIVATIONS = PJREDDIE_ACTIVATIONS | frozenset(
    "swish mish hard_mish normalize_channels normalize_channels_softmax "
    "normalize_channels_softmax_maxval relu6 gelu revleaky".split())

DETECTION_SECTIONS = ("yolo", "Gaussian_yolo", "region")
CONV_SECTIONS = ("convolutional", "conv")
_STRIP = str.maketrans("", "", " \t\r\n")


def cfg_dialect(cfg: "Cfg") -> Dialect | None:
    """AlexeyAB's when the cfg uses what only AlexeyAB's (and hank-ai's) darknet reads:
    [route] groups=, their layer types, their activations. Such a cfg, and weights made
    with it, belong to that dialect whatever darknet is installed where it is checked.
    None when every dialect reads it alike."""
    for s in cfg.layers:
        if s.name == "route" and s.option("groups") is not None:
            return Dialect.ALEXEYAB
        if s.name not in PJREDDIE_SECTIONS and s.name in ALEXEYAB_SECTIONS:
            return Dialect.ALEXEYAB
        act = s.get("activation")
        if act is not None and act not in PJREDDIE_ACTIVATIONS and act in ALEXEYAB_ACTIVATIONS:
            return Dialect.ALEXEYAB
    return None


# ---------------------------------------------------------------------------------------
# The file model


@dataclass
class Option:
    key: str
    value: str
    index: int  # 0-based line index in the file

    @property
    def line(self) -> int:
        return self.index + 1


@dataclass
class Section:
    """One `[type]` block. `type` is what darknet compares, e.g. `[yolo]`."""

    type: str
    index: int  # position among the sections (0 is [net])
    header_index: int  # 0-based line index of the `[...]` line
    options: list[Option] = field(default_factory=list)
    _cfg: "Cfg | None" = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.type[1:-1] if self.type.endswith("]") else self.type[1:]

    @property
    def line(self) -> int:
        return self.header_index + 1

    def option(self, key: str) -> Option | None:
        """The option darknet reads: the first with this key (option_find)."""
        return next((o for o in self.options if o.key == key), None)

    def get(self, key: str, default: str | None = None) -> str | None:
        opt = self.option(key)
        return opt.value if opt else default

    def line_of(self, key: str) -> int:
        """The line of `key`, or of the section header when the key is absent."""
        opt = self.option(key)
        return opt.line if opt else self.line

    def set(self, key: str, value) -> None:
        """Replace `key` in place (keeping its position), or add it at the section's end."""
        if self._cfg is None:
            raise RuntimeError("section is not attached to a Cfg")
        self._cfg._set_option(self, key, str(value))


class Cfg:
    """A darknet cfg file: its lines as written, and its sections as darknet parses them."""

    def __init__(self, text: str, path: str = "<cfg>"):
        self.path = str(path)
        self._lines = _split_lines(text)
        self._eol = "\r\n" if self._lines and self._lines[0].endswith("\r\n") else "\n"
        self.sections: list[Section] = []
        #: (line, text) of lines darknet cannot parse: no `=`, or an option before any section
        self.malformed: list[tuple[int, str]] = []
        self.stray: list[tuple[int, str]] = []
        self._parse()

    # -- loading and saving -------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, path: str = "<cfg>") -> "Cfg":
        return cls(text, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Cfg":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadInput(f"cannot read cfg: {e.strerror}", path=str(path),
                           hint="check the path (it is relative to the current folder)") from None
        return cls(data.decode("utf-8", errors="surrogateescape"), str(path))

    def dumps(self) -> str:
        return "".join(self._lines)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file in the same folder, then os.replace): a darknet that
        starts meanwhile reads the old file or the new one, never half of one."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".cfg-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.dumps().encode("utf-8", errors="surrogateescape"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.path = path

    def copy(self) -> "Cfg":
        return Cfg(self.dumps(), self.path)

    @property
    def lines(self) -> list[str]:
        """The file's lines, each with its own line ending."""
        return list(self._lines)

    # -- [net] ----------------------------------------------------------------------------

    @property
    def net(self) -> Section | None:
        first = self.sections[0] if self.sections else None
        return first if first is not None and first.type in ("[net]", "[network]") else None

    def net_get(self, key: str, default: str | None = None) -> str | None:
        net = self.net
        return net.get(key, default) if net else default

    def set_net(self, key: str, value) -> None:
        net = self.net
        if net is None:
            raise BadInput("the cfg does not start with a [net] section", path=self.path,
                           hint="darknet requires [net] (or [network]) as the first section")
        net.set(key, value)

    def _net_int(self, key: str) -> int | None:
        return atoi(self.net_get(key))

    def _net_float(self, key: str) -> float | None:
        return atof(self.net_get(key))

    # Typed views of [net]: darknet's reading of the value (atoi/atof), None when absent.
    batch = property(lambda self: self._net_int("batch"))
    subdivisions = property(lambda self: self._net_int("subdivisions"))
    max_batches = property(lambda self: self._net_int("max_batches"))
    burn_in = property(lambda self: self._net_int("burn_in"))
    width = property(lambda self: self._net_int("width"))
    height = property(lambda self: self._net_int("height"))
    learning_rate = property(lambda self: self._net_float("learning_rate"))

    @property
    def steps(self) -> list[int]:
        return _int_list(self.net_get("steps"))

    @property
    def scales(self) -> list[float]:
        return _float_list(self.net_get("scales"))

    # -- layers ---------------------------------------------------------------------------

    @property
    def layers(self) -> list[Section]:
        """Every section after [net], in order (darknet's layer i is layers[i])."""
        return self.sections[1:] if self.net is not None else list(self.sections)

    def output_layers(self) -> list[Section]:
        """The detection heads: [yolo], [Gaussian_yolo] and [region] sections."""
        return [s for s in self.sections if s.name in DETECTION_SECTIONS]

    @property
    def classes(self) -> int | None:
        """`classes` of the last detection layer: the one darknet trains with."""
        heads = self.output_layers()
        return _head_classes(heads[-1]) if heads else None

    def conv_before(self, head: Section) -> Section | None:
        """The section right before `head` when it is a [convolutional], else None."""
        prev = self.sections[head.index - 1] if head.index > 0 else None
        return prev if prev is not None and prev.name in CONV_SECTIONS else None

    # -- internals ------------------------------------------------------------------------

    def _parse(self) -> None:
        for i, raw in enumerate(self._lines):
            s = raw.translate(_STRIP)
            if not s or s[0] in "#;":
                continue
            if s[0] == "[":
                self.sections.append(Section(s, len(self.sections), i, _cfg=self))
            elif "=" not in s:
                self.malformed.append((i + 1, raw.rstrip("\r\n")))
            elif not self.sections:
                self.stray.append((i + 1, raw.rstrip("\r\n")))
            else:
                key, value = s.split("=", 1)
                self.sections[-1].options.append(Option(key, value, i))

    def _set_option(self, section: Section, key: str, value: str) -> None:
        key, value = key.translate(_STRIP), value.strip()
        if not key or any(c in key for c in "=[#;") or any(c in value for c in "\r\n"):
            raise BadInput(f"cannot write {key!r}={value!r} into a cfg: keys have no "
                           "'=', '[', '#' or ';' and values are one line", path=self.path)
        opt = section.option(key)
        if opt is not None:
            self._lines[opt.index] = _replace_value(self._lines[opt.index], value)
            opt.value = value.translate(_STRIP)
            return
        where = (section.options[-1].index if section.options else section.header_index) + 1
        if not self._lines[where - 1].endswith("\n"):
            self._lines[where - 1] += self._eol
        self._lines.insert(where, f"{key}={value}{self._eol}")
        for s in self.sections:
            if s.header_index >= where:
                s.header_index += 1
            for o in s.options:
                if o.index >= where:
                    o.index += 1
        section.options.append(Option(key, value.translate(_STRIP), where))


def _split_lines(text: str) -> list[str]:
    """Lines split on `\\n` only, as fgetl() does, each keeping its ending."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _replace_value(raw: str, value: str) -> str:
    """`raw` with its value replaced, keeping the key's spelling, spacing and line ending."""
    body = raw.rstrip("\r\n")
    ending = raw[len(body):]
    eq = body.index("=")
    space = " " if body[eq + 1:eq + 2] == " " else ""
    return f"{body[:eq + 1]}{space}{value}{ending}"


def _int_list(value: str | None) -> list[int]:
    """darknet's reading of `1,2,3`: stops at '#', atoi on each field."""
    if not value:
        return []
    return [atoi(v) for v in value.split("#", 1)[0].split(",")]


def _float_list(value: str | None) -> list[float]:
    if not value:
        return []
    return [atof(v) for v in value.split("#", 1)[0].split(",")]


def _head_classes(head: Section) -> int:
    return atoi(head.get("classes", "20"))


def _head_num(head: Section) -> int:
    return atoi(head.get("num", "1"))


def _head_masks(head: Section) -> list[int] | None:
    """The mask indices, None without `mask=` ([yolo] then uses every anchor)."""
    mask = head.get("mask")
    return _int_list(mask) if mask is not None else None


def head_filters(head: Section) -> int:
    """The filters the convolution feeding `head` must have (darknet.md §6)."""
    classes = _head_classes(head)
    if head.name == "region":
        return (classes + atoi(head.get("coords", "4")) + 1) * _head_num(head)
    masks = _head_masks(head)
    n = len(masks) if masks is not None else _head_num(head)
    extra = 9 if head.name == "Gaussian_yolo" else 5
    return (classes + extra) * n


def _filters_formula(head: Section) -> str:
    classes = _head_classes(head)
    if head.name == "region":
        return f"(classes {classes} + coords {atoi(head.get('coords', '4'))} + 1) × num " \
               f"{_head_num(head)}"
    masks = _head_masks(head)
    n, what = (len(masks), "masks") if masks is not None else (_head_num(head), "num")
    extra = 9 if head.name == "Gaussian_yolo" else 5
    return f"(classes {classes} + {extra}) × {n} {what}"


# ---------------------------------------------------------------------------------------
# --set key=value


def validate_net_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """Check `--set key=value` pairs against the [net] keys darknet reads.

    Returns the pairs as darknet will see them (spaces removed). A typo such as
    `max_batch=6000` would otherwise be ignored by darknet, which then trains with its
    default instead, so an unknown key is refused with the closest known ones.
    """
    clean: dict[str, str] = {}
    for raw_key, raw_value in overrides.items():
        key = str(raw_key).translate(_STRIP)
        value = str(raw_value).strip()
        if key not in NET_KEYS:
            raise BadInput(f"--set {key}: not a [net] key darknet reads",
                           hint=_suggest(key, NET_KEYS))
        problem = value_problem("net", key, value.translate(_STRIP))
        if problem:
            raise BadInput(f"--set {key}={value}: {problem}", hint=value_hint("net", key))
        clean[key] = value.translate(_STRIP)
    return clean


def _suggest(key: str, known) -> str:
    lower = {k.lower(): k for k in known}
    close = [lower[key.lower()]] if key.lower() in lower else []
    close += [k for k in difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
              if k not in close]
    if close:
        return "closest known keys: " + ", ".join(close)
    return "known keys include batch, subdivisions, width, height, learning_rate, burn_in, " \
           "max_batches, steps, scales"


# ---------------------------------------------------------------------------------------
# check_cfg


def check_cfg(cfg: Cfg, *, training: bool = True, dialect: Dialect = Dialect.PJREDDIE,
              strict_size: bool = False) -> list[Finding]:
    """Every rule the cfg breaks, each with its line and the fix.

    `dialect` decides what is fatal: pjreddie (Debian's darknet) aborts on section types it
    does not know and silently replaces unknown activations with ReLU; hank-ai refuses a
    width or height that is not a multiple of 32 (`strict_size` makes that an error too).
    """
    d = Dialect.of(dialect)
    out: list[Finding] = []
    _check_text(cfg, d, out)
    _check_structure(cfg, d, out)
    _check_duplicates(cfg, d, out)
    _check_values(cfg, out)
    if cfg.net is not None:
        _check_net(cfg, d, training, strict_size, out)
    _check_heads(cfg, d, training, out)
    _check_layers(cfg, d, out)
    return out


def _add(out: list[Finding], cfg: Cfg, line: int | None, reason: str, fix: str,
         severity: Severity = Severity.ERROR) -> None:
    out.append(Finding(cfg.path, line, reason, fix, severity))


def _check_text(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    lines = cfg._lines
    if lines and lines[0].startswith("\ufeff"):
        _add(out, cfg, 1, "the file starts with a byte-order mark (BOM): darknet reads "
             "'\\xef\\xbb\\xbf[net]' as a broken line, not as the [net] section",
             "save the file as UTF-8 without BOM")
    crlf = next((i + 1 for i, raw in enumerate(lines) if raw.endswith("\r\n")), None)
    if crlf and d is Dialect.PJREDDIE:
        _add(out, cfg, crlf, "Windows (CRLF) line endings: pjreddie's darknet keeps the "
             "'\\r', so '[net]\\r' is not [net] and it aborts with 'First section must be "
             "[net] or [network]'", "convert the file to LF line endings (dos2unix)")
    for line, text in cfg.malformed:
        if line == 1 and text.startswith("\ufeff"):
            continue
        _add(out, cfg, line, f"darknet cannot parse {text.strip()!r}: not key=value and "
             "not a [section]", "write it as key=value, or start it with # to comment it out")
    for line, text in cfg.stray:
        _add(out, cfg, line, f"{text.strip()!r} comes before the first [section]; darknet "
             "has no section to put it in and crashes", "move it into [net]")


def _check_structure(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    if not cfg.sections:
        _add(out, cfg, None, "the cfg has no sections ('Config file has no sections')",
             "start from an upstream cfg, e.g. yolov4-tiny-custom.cfg")
        return
    if cfg.net is None:
        first = cfg.sections[0]
        _add(out, cfg, first.line, f"the first section is {first.type}: darknet requires "
             "[net] or [network] first", "put the [net] section at the top of the file")
    if not cfg.output_layers():
        _add(out, cfg, None, "the cfg has no [yolo] or [region] layer, so it is not a "
             "detector: `detector train` has nothing to train",
             "start from a detector cfg (yolov3-tiny, yolov4-tiny-custom, yolov2-tiny-voc)")


def _check_net(cfg: Cfg, d: Dialect, training: bool, strict_size: bool,
               out: list[Finding]) -> None:
    for opt in cfg.net.options:
        if opt.key not in NET_KEYS:
            _add(out, cfg, opt.line, f"[net] key {opt.key!r} is not one darknet reads; it is "
                 "ignored" + (" (hank-ai refuses it)" if d is Dialect.HANKAI else ""),
                 _suggest(opt.key, NET_KEYS) + "; or delete the line",
                 Severity.ERROR if d is Dialect.HANKAI else Severity.WARNING)
        elif "#" in opt.value:
            _add(out, cfg, opt.line, f"{opt.key}={opt.value}: darknet removes spaces but not "
                 "inline comments, so the comment is part of the value",
                 "move the comment to a line of its own", Severity.WARNING)
    _check_size(cfg, d, strict_size, out)
    if training:
        _check_batch(cfg, out)
        _check_schedule(cfg, out)


def _check_values(cfg: Cfg, out: list[Finding]) -> None:
    """Every typed value darknet reads (the first of two equal keys): numbers where it
    reads numbers, within the range some real network uses (farm.darknet.cfgvalues)."""
    for section in cfg.sections:
        name = "net" if section is cfg.net else section.name
        for opt in section.options:
            if section.option(opt.key) is not opt:
                continue
            found = _value_finding(cfg, section, name, opt.key, opt.value, opt.line)
            if found:
                out.append(found)


#: [net] keys that no rule of check_cfg reads but the one on their own value: a cfg that
#: passes with one value passes with any other value that passes `net_value_finding`.
#: A sweep checks each distinct value of these once, not each trial's whole cfg
#: (farm.sweeps.controller.plan). A rule that reads one of them with another key must
#: take it out of this set (tests/unit/test_cfg.py holds the set to that).
VALUE_ONLY = frozenset({"learning_rate", "momentum", "decay"})


def net_value_finding(cfg: Cfg, key: str, value: str) -> Finding | None:
    """What check_cfg would say of `key=value` in the [net] of `cfg` (None: nothing)."""
    net = cfg.net
    if net is None:
        return None
    return _value_finding(cfg, net, "net", key, value, net.line_of(key))


def _value_finding(cfg: Cfg, section: Section, name: str, key: str, value: str,
                   line: int) -> Finding | None:
    problem = value_problem(name, key, value)
    if not problem:
        return None
    return Finding(cfg.path, line, f"{key}={value} in {section.type} at line "
                   f"{section.line}: {problem}", value_hint(name, key), Severity.ERROR)


def _check_duplicates(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    """darknet's option_find() takes the first of two equal keys; hank-ai refuses them."""
    for section in cfg.sections:
        seen: dict[str, Option] = {}
        for opt in section.options:
            first = seen.setdefault(opt.key, opt)
            if first is not opt:
                _add(out, cfg, opt.line, f"{section.type} at line {section.line} sets "
                     f"{opt.key} twice (lines {first.line} and {opt.line}); darknet uses "
                     f"the first, {opt.key}={first.value}",
                     f"delete one of the two {opt.key} lines",
                     Severity.ERROR if d is Dialect.HANKAI else Severity.WARNING)


def _check_size(cfg: Cfg, d: Dialect, strict: bool, out: list[Finding]) -> None:
    for key in ("width", "height"):
        value = cfg._net_int(key)
        line = cfg.net.line_of(key)
        raw = cfg.net_get(key)
        if raw is not None and value_problem("net", key, raw):
            continue  # _check_values says what is wrong with it
        if not value or value <= 0:
            _add(out, cfg, line, f"[net] has no positive {key} ('No input parameters "
                 "supplied')", f"set {key}=416 (a multiple of 32)")
        elif value % 32:
            fatal = strict or d is Dialect.HANKAI
            refuses = " (hank-ai refuses it)" if d is Dialect.HANKAI else ""
            _add(out, cfg, line, f"{key}={value} is not a multiple of 32: the YOLO grid "
                 f"would not line up with the image{refuses}",
                 f"use {key}={_round32(value)}", Severity.ERROR if fatal else Severity.WARNING)


def _round32(value: int) -> int:
    return max(32, int(round(value / 32)) * 32)


def _check_batch(cfg: Cfg, out: list[Finding]) -> None:
    net = cfg.net
    batch, subdivisions = cfg.batch or 1, cfg.subdivisions or 1
    line = net.line_of("batch")
    if batch == 1 and subdivisions == 1:
        _add(out, cfg, line, "batch=1 subdivisions=1 is darknet's test-time setting: "
             "training on one image per step is noisy and AlexeyAB refuses it",
             "set batch=64 subdivisions=16 (the cfg's '# Training' values)")
    elif batch < 1 or subdivisions < 1 or batch % subdivisions:
        _add(out, cfg, line, f"batch={batch} is not a multiple of subdivisions="
             f"{subdivisions}: darknet trains batch/subdivisions images at a time and "
             "drops the rest (or none at all when subdivisions > batch)",
             "make batch a multiple of subdivisions, e.g. batch=64 subdivisions=16")


def _check_schedule(cfg: Cfg, out: list[Finding]) -> None:
    net = cfg.net
    max_batches = cfg.max_batches or 0
    if max_batches <= 0:
        _add(out, cfg, net.line_of("max_batches"), "[net] has no positive max_batches: "
             "training stops before the first iteration",
             "set max_batches=max(classes×2000, training images, 6000)")
    policy = net.get("policy", "constant")
    if policy not in POLICIES:
        _add(out, cfg, net.line_of("policy"), f"policy={policy} is unknown: darknet "
             "prints 'Couldn't find policy' and keeps the learning rate constant",
             "set policy=steps")
    if policy == "steps":
        _check_steps(cfg, max_batches, out)
    burn_in = cfg.burn_in or 0
    if max_batches > 0 and burn_in >= max_batches:
        _add(out, cfg, net.line_of("burn_in"), f"burn_in={burn_in} is not below max_batches="
             f"{max_batches}: the learning rate never reaches learning_rate",
             "lower burn_in (1000 is usual) or raise max_batches", Severity.WARNING)


def _check_steps(cfg: Cfg, max_batches: int, out: list[Finding]) -> None:
    net = cfg.net
    steps, scales = net.get("steps"), net.get("scales")
    line = net.line_of("steps")
    if steps is None or scales is None:
        _add(out, cfg, line, "policy=steps needs both steps= and scales= ('STEPS policy "
             "must have steps and scales in cfg file')",
             "add steps=<80% of max_batches>,<90% of max_batches> and scales=.1,.1")
        return
    s_list, c_list = cfg.steps, cfg.scales
    if len(s_list) != len(c_list):
        _add(out, cfg, net.line_of("scales"), f"{len(s_list)} steps but {len(c_list)} "
             "scales: darknet reads one scale per step and runs past the end of the list",
             "give exactly one scale per step, e.g. steps=4800,5400 scales=.1,.1")
    if any(b < a for a, b in zip(s_list, s_list[1:])):
        _add(out, cfg, line, f"steps={steps} are not in ascending order: darknet applies "
             "each scale only after the previous step was passed",
             "list steps in ascending order")
    late = [s for s in s_list if max_batches > 0 and s >= max_batches]
    if late:
        _add(out, cfg, line, f"steps {', '.join(map(str, late))} are not below max_batches="
             f"{max_batches}: those learning-rate drops never happen",
             f"use steps={int(max_batches * .8)},{int(max_batches * .9)} (80% and 90%)")


def _check_heads(cfg: Cfg, d: Dialect, training: bool, out: list[Finding]) -> None:
    heads = cfg.output_layers()
    if not heads:
        return
    final = _head_classes(heads[-1])
    for head in heads:
        _check_head_filters(cfg, head, out)
        _check_head_anchors(cfg, head, out)
        if _head_classes(head) != final:
            _add(out, cfg, head.line_of("classes"), f"{head.type} at line {head.line} has "
                 f"classes={_head_classes(head)} but the last detection layer has "
                 f"classes={final}: every head must detect the same classes",
                 f"set classes={final} in every [yolo]/[region] (and their filters)")
    last = heads[-1]
    if training and d is Dialect.PJREDDIE and atoi(last.get("random", "0")):
        _add(out, cfg, last.line_of("random"), "random=1: pjreddie's darknet ignores "
             "width/height then and trains at a random 320..608 px, and at 608×608 for the "
             "last 200 iterations", "set random=0 to train at the cfg's width×height",
             Severity.WARNING)


def _check_head_filters(cfg: Cfg, head: Section, out: list[Finding]) -> None:
    conv = cfg.conv_before(head)
    need = head_filters(head)
    if conv is None:
        prev = cfg.sections[head.index - 1] if head.index > 0 else None
        _add(out, cfg, head.line, f"{head.type} at line {head.line} is not fed by a "
             f"[convolutional] (it follows {prev.type if prev else 'nothing'}), so its "
             "filters cannot be checked", f"put a [convolutional] with filters={need} "
             f"and activation=linear right before it", Severity.WARNING)
        return
    have = atoi(conv.get("filters", "1"))
    if have != need:
        _add(out, cfg, conv.line_of("filters"), f"filters={have} in the [convolutional] "
             f"before {head.type} at line {head.line} should be {need} = "
             f"{_filters_formula(head)}; darknet aborts ('l.outputs == params.inputs')",
             f"set filters={need} at line {conv.line_of('filters')}")


def _check_head_anchors(cfg: Cfg, head: Section, out: list[Finding]) -> None:
    num = _head_num(head)
    anchors = _float_list(head.get("anchors"))
    if head.get("anchors") is not None and len(anchors) < 2 * num:
        _add(out, cfg, head.line_of("anchors"), f"{len(anchors)} anchor values for num="
             f"{num}: darknet reads {2 * num} (a width and a height per anchor) and the "
             "missing ones are 0", f"give {2 * num} values or set num={len(anchors) // 2}")
    masks = _head_masks(head) or []
    bad = [m for m in masks if m < 0 or m >= num]
    if bad:
        _add(out, cfg, head.line_of("mask"), f"mask values {bad} are not anchors 0..{num - 1} "
             f"(num={num}): darknet reads past the anchor list",
             f"use mask indices below num={num}")


def _check_layers(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    known = PJREDDIE_SECTIONS if d is Dialect.PJREDDIE else ALEXEYAB_SECTIONS
    activations = PJREDDIE_ACTIVATIONS if d is Dialect.PJREDDIE else ALEXEYAB_ACTIVATIONS
    who = d.who
    bad_activations: dict[str, list[int]] = {}
    grouped_routes: list[int] = []
    for s in cfg.layers:
        if s.name not in known:
            _add(out, cfg, s.line, _unknown_section_reason(s, who, d),
                 _unknown_section_fix(s, d))
            continue
        act = s.get("activation")
        if act is not None and act not in activations:
            bad_activations.setdefault(act, []).append(s.line_of("activation"))
        if d is Dialect.PJREDDIE and s.name == "route" and s.option("groups") is not None:
            grouped_routes.append(s.line_of("groups"))
        _check_references(cfg, s, out)
    for act, lines in bad_activations.items():
        _add(out, cfg, lines[0], f"activation={act} ({_lines_text(lines)}) is unknown to "
             f"{who}: it prints 'Couldn't find activation function' and trains with ReLU, "
             "a different network from the one the cfg describes",
             "train this cfg with AlexeyAB's darknet (it knows mish and swish), or use "
             "activation=leaky" if d is Dialect.PJREDDIE else "use activation=leaky")
    if grouped_routes:
        _add(out, cfg, grouped_routes[0], f"[route] groups=/group_id= "
             f"({_lines_text(grouped_routes)}) are ignored by pjreddie's darknet ('Unused "
             "field'): the route passes all its channels, so the layers after it get other "
             "shapes than in AlexeyAB's yolov4-tiny and its pretrained weights do not fit",
             "train yolov4 cfgs with AlexeyAB's darknet, or start from yolov3-tiny with "
             "pjreddie")


def _check_references(cfg: Cfg, s: Section, out: list[Finding]) -> None:
    """[route] layers= and [shortcut] from= must name layers before this one."""
    key = {"route": "layers", "shortcut": "from"}.get(s.name)
    if key is None:
        return
    index = s.index - (1 if cfg.net is not None else 0)
    refs = _int_list(s.get(key))
    bad = [r for r in refs if not 0 <= (r + index if r < 0 else r) < index]
    if not refs or bad:
        what = f"{key}={s.get(key)} names no earlier layer" if refs else f"no {key}= given"
        _add(out, cfg, s.line_of(key), f"{s.type} at line {s.line} (layer {index}): {what}; "
             "darknet reads memory that is not a layer and crashes",
             f"refer to layers 0..{index - 1}, or -1..-{index} counted back from this one")


def _lines_text(lines: list[int]) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    shown = ", ".join(map(str, lines[:5])) + (", …" if len(lines) > 5 else "")
    return f"{len(lines)} layers, lines {shown}"


def _unknown_section_reason(s: Section, who: str, d: Dialect) -> str:
    if d is Dialect.PJREDDIE and s.name in ALEXEYAB_SECTIONS:
        return (f"{s.type} is an AlexeyAB layer that {who} does not know: it prints 'Type "
                "not recognized' and builds an empty layer, then aborts ('Layer before "
                "convolutional layer must output image') or segfaults at the first "
                "iteration")
    lower = {t.lower(): t for t in ALEXEYAB_SECTIONS | PJREDDIE_SECTIONS}
    near = lower.get(s.name.lower())
    if near:
        return f"{s.type} is not a layer type: darknet compares section names exactly " \
               f"(case matters), so it is not [{near}] ('Type not recognized')"
    return f"{s.type} is not a layer type {who} knows ('Type not recognized'); the " \
           "network breaks at this layer"


def _unknown_section_fix(s: Section, d: Dialect) -> str:
    lower = {t.lower(): t for t in ALEXEYAB_SECTIONS | PJREDDIE_SECTIONS}
    near = lower.get(s.name.lower())
    if near and near != s.name:
        return f"write [{near}]"
    if d is Dialect.PJREDDIE and s.name in ALEXEYAB_SECTIONS:
        return "train this cfg with AlexeyAB's darknet, or start from a cfg pjreddie " \
               "knows (yolov3-tiny, yolov2-tiny-voc)"
    close = difflib.get_close_matches(s.name, sorted(ALEXEYAB_SECTIONS), n=1)
    return f"write [{close[0]}]" if close else "remove the section"


# ---------------------------------------------------------------------------------------
# make_cfg


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
    _require_int("classes", classes, minimum=1)
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
        _require_int("burn_in", burn_in, minimum=0)
        cfg.set_net("burn_in", burn_in)
    if anchors is not None:
        _set_anchors(cfg, heads, anchors)
    for head in heads:
        head.set("classes", classes)
        _set_filters(cfg, head)
    return cfg


def _require_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BadInput(f"{name}={value!r} must be an integer ≥ {minimum}")


def _require_batch(batch: int, subdivisions: int) -> None:
    _require_int("batch", batch, minimum=1)
    _require_int("subdivisions", subdivisions, minimum=1)
    if batch == 1 and subdivisions == 1:
        raise BadInput("batch=1 subdivisions=1 is darknet's test-time setting, not a "
                       "training one", hint="use batch=64 subdivisions=16 (or 8/2 on a CPU)")
    if batch % subdivisions:
        raise BadInput(f"batch={batch} is not a multiple of subdivisions={subdivisions}",
                       hint="darknet trains batch/subdivisions images at a time; e.g. "
                            "batch=64 subdivisions=16")


def _require_size(key: str, value) -> None:
    _require_int(key, value, minimum=32)
    if value % 32:
        raise BadInput(f"{key}={value} is not a multiple of 32: the YOLO grid (stride 32) "
                       "would not line up with the image",
                       hint=f"use {key}={_round32(value)}")


def default_max_batches(classes: int, train_images: int = 0) -> int:
    """darknet's README rule: classes×2000, at least the training images and 6000."""
    return max(classes * 2000, train_images, 6000)


def _set_schedule(cfg: Cfg, classes: int, max_batches: int | None, train_images: int) -> None:
    if max_batches is None:
        max_batches = default_max_batches(classes, train_images)
    _require_int("max_batches", max_batches, minimum=1)
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
    order = sorted(yolo, key=lambda h: max(_head_masks(h) or [_head_num(h) - 1]))
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
    arr = np.asarray(anchors, dtype=float).reshape(-1, 2) if len(anchors) else np.empty((0, 2))
    if not len(arr) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise BadInput("anchors must be positive (width, height) pairs in network pixels",
                       hint="e.g. [(10, 14), (23, 27), (37, 58)]")
    return [(float(w), float(h)) for w, h in arr]


# ---------------------------------------------------------------------------------------
# calc_anchors


def calc_anchors(box_sizes_px: np.ndarray, k: int, width: int, height: int,
                 seed: int = 0, max_iter: int = 300) -> list[tuple[int, int]]:
    """k anchors for boxes of these (w, h) sizes, as darknet's calc_anchors finds them.

    k-means on (w, h) with 1 − IoU as the distance (boxes compared as if they shared a
    corner) and k-means++ seeding, sorted by area. darknet seeds with the clock
    (srand(time(0))); here `seed` makes the result repeatable. `width`/`height` are the
    network size, used to clip the anchors to it.
    """
    boxes = np.asarray(box_sizes_px, dtype=float).reshape(-1, 2)
    boxes = boxes[np.all(np.isfinite(boxes), axis=1) & np.all(boxes > 0, axis=1)]
    _require_int("k", k, minimum=1)
    if len(boxes) < k:
        raise BadInput(f"{len(boxes)} boxes are too few for {k} anchors",
                       hint="ask for fewer anchors or label more objects")
    rng = np.random.default_rng(seed)
    centers = _kmeanspp(boxes, k, rng)
    assign = None
    for _ in range(max_iter):
        new = np.argmax(_iou_wh(boxes, centers), axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = boxes[assign == j]
            if len(members):
                centers[j] = members.mean(axis=0)
    centers = centers[np.argsort(centers[:, 0] * centers[:, 1], kind="stable")]
    return [(int(min(max(round(w), 1), width)), int(min(max(round(h), 1), height)))
            for w, h in centers]


def _iou_wh(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    inter = (np.minimum(boxes[:, None, 0], centers[None, :, 0])
             * np.minimum(boxes[:, None, 1], centers[None, :, 1]))
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (centers[:, 0] * centers[:, 1])[None, :]
    return inter / (union - inter)


def _kmeanspp(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [boxes[rng.integers(len(boxes))]]
    for _ in range(1, k):
        dist = 1.0 - _iou_wh(boxes, np.array(centers)).max(axis=1)
        weights = dist ** 2
        total = weights.sum()
        pick = rng.integers(len(boxes)) if total <= 0 else rng.choice(len(boxes),
                                                                      p=weights / total)
        centers.append(boxes[pick])
    return np.array(centers, dtype=float)
