"""darknet cfg files: read them as darknet does, edit them without losing a byte.

Parsing follows darknet's read_cfg(): every line is stripped of spaces and tabs (so
`max_batches = 6000` is the key `max_batches`), `#` and `;` start comment lines, a line
starting with `[` opens a section whose type is the whole stripped line, and keys are
case-sensitive. A `Cfg` keeps the original lines, so `dumps()` gives back the file
byte-for-byte until something is changed, and edits touch only the lines they change.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from farm.darknet.cfg.values import atof, atoi
from farm.errors import BadInput

#: what darknet's read_cfg() strips from every line
STRIP = str.maketrans("", "", " \t\r\n")
#: the detection heads, and the sections that may feed one
DETECTION_SECTIONS = ("yolo", "Gaussian_yolo", "region")
CONV_SECTIONS = ("convolutional", "conv")


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
        return int_list(self.net_get("steps"))

    @property
    def scales(self) -> list[float]:
        return float_list(self.net_get("scales"))

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
        return head_classes(heads[-1]) if heads else None

    def conv_before(self, head: Section) -> Section | None:
        """The section right before `head` when it is a [convolutional], else None."""
        prev = self.sections[head.index - 1] if head.index > 0 else None
        return prev if prev is not None and prev.name in CONV_SECTIONS else None

    # -- internals ------------------------------------------------------------------------

    def _parse(self) -> None:
        for i, raw in enumerate(self._lines):
            s = raw.translate(STRIP)
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
        key, value = key.translate(STRIP), value.strip()
        if not key or any(c in key for c in "=[#;") or any(c in value for c in "\r\n"):
            raise BadInput(f"cannot write {key!r}={value!r} into a cfg: keys have no "
                           "'=', '[', '#' or ';' and values are one line", path=self.path)
        opt = section.option(key)
        if opt is not None:
            self._lines[opt.index] = _replace_value(self._lines[opt.index], value)
            opt.value = value.translate(STRIP)
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
        section.options.append(Option(key, value.translate(STRIP), where))


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


def int_list(value: str | None) -> list[int]:
    """darknet's reading of `1,2,3`: stops at '#', atoi on each field."""
    if not value:
        return []
    return [atoi(v) for v in value.split("#", 1)[0].split(",")]


def float_list(value: str | None) -> list[float]:
    if not value:
        return []
    return [atof(v) for v in value.split("#", 1)[0].split(",")]


def head_classes(head: Section) -> int:
    return atoi(head.get("classes", "20"))


def head_num(head: Section) -> int:
    return atoi(head.get("num", "1"))


def head_masks(head: Section) -> list[int] | None:
    """The mask indices, None without `mask=` ([yolo] then uses every anchor)."""
    mask = head.get("mask")
    return int_list(mask) if mask is not None else None


def head_filters(head: Section) -> int:
    """The filters the convolution feeding `head` must have (darknet.md §6)."""
    classes = head_classes(head)
    if head.name == "region":
        return (classes + atoi(head.get("coords", "4")) + 1) * head_num(head)
    masks = head_masks(head)
    n = len(masks) if masks is not None else head_num(head)
    extra = 9 if head.name == "Gaussian_yolo" else 5
    return (classes + extra) * n


def filters_formula(head: Section) -> str:
    classes = head_classes(head)
    if head.name == "region":
        return f"(classes {classes} + coords {atoi(head.get('coords', '4'))} + 1) × num " \
               f"{head_num(head)}"
    masks = head_masks(head)
    n, what = (len(masks), "masks") if masks is not None else (head_num(head), "num")
    extra = 9 if head.name == "Gaussian_yolo" else 5
    return f"(classes {classes} + {extra}) × {n} {what}"
