"""Streaming parser for darknet's console output, in all three dialects.

darknet reports progress only as text on its merged stdout/stderr: AlexeyAB ("A"),
hank-ai ("H") and pjreddie/Debian ("P") word it differently (docs: darknet.md §1-§5).
`LogParser` turns raw bytes, in chunks of any size, into the typed events of
`farm.darknet.events`.

Why it is shaped the way it is: a GPU run prints ~8 lines per iteration (per-layer
`v3 (iou loss…`, `total_bbox`, `Loaded:`, titles) and only one of them matters, so a
Python loop over lines would spend its time on noise.  Instead each chunk is decoded and
line-split by C code, and one regex (`_LINE`) jumps from line start to line start inside
the regex engine, picking out only the lines that begin with a word an event can start
with.  Only those lines are ANSI-stripped and matched in full by their handler.
"""
from __future__ import annotations

import codecs
import math
import re
from pathlib import Path

from farm.darknet.events import (CheckpointSaved, ClassAP, DarknetError, ErrorKind, Event,
                                 Iteration, MapResult, MapSummary)

__all__ = ["LogParser", "parse_file", "parse_text", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x07")

# Words an event line can start with, and the handler that reads the line.  A line that
# starts with a colour code or a title is stripped of them and looked at again.
_MARKERS = {
    "class_id = ": "_on_class_ap", "for conf_thresh": "_on_conf", "IoU threshold": "_on_iou",
    "mean average precision": "_on_map", "mean_average_precision": "_on_summary",
    "Last accuracy": "_on_last", "last accuracy": "_on_last", "Saving weights to": "_on_save",
    "Id ": "_on_header", "calculation mAP": "_on_start", "Calculating mAP": "_on_start",
    "\x1b": "_dispatch", "\x07": "_dispatch",
    **dict.fromkeys((
        "*", "Darknet error", "Error", "CUDA", "cuDNN", "CUDNN", "Malloc", "Cannot", "Can't",
        "Couldn't", "Wrong", "Loading weights", "Type not", "Config file", "First section",
        "darknet", "failed", "invalid", "realloc", "free", "malloc", "munmap", "corrupted",
        "double free", "Thread creation", "terminate called", "OpenCV", "Cancel",
        "argument", "no training", "There is no", "validation image", "duplicate"),
        "_on_error"),
}
# After blanks and H's "-> ", a marker word (group 1) or a number followed by more: iteration
# lines, H table rows and messages glued to a `\r%d` progress count (a bare count is not).
# The lookahead turns most other lines away in one test; "-> " is folded into the class
# because an optional group there cost as much as all the rest of the scan.
_WORD = re.compile(
    r"[ \t>-]*"
    rf"(?=[\d{re.escape(''.join(sorted({w[0] for w in _MARKERS})))}])"
    rf"(?:({'|'.join(map(re.escape, sorted(_MARKERS, key=len, reverse=True)))})|\d+[^\d\n])")
_LINE = re.compile(r"\n(" + _WORD.pattern + r"[^\n]*)")  # groups: marked line, word
_A_LOCATION = "Darknet error location"

_DEC = r"\d+(?:\.\d+)?"  # a threshold or a time: float() cannot fail on it
_ITER_AP = re.compile(  # A (every historic wording) and P
    rf"\s*(\d+): (\S+), (\S+) avg(?: loss)?, (\S+) rate, (-?{_DEC}) seconds, (-?\d+) images")
_ITER_H = re.compile(
    r"\s*(\d+): loss=(\S+), avg loss=(\S+), (?:last=\S+, best=\S+, (?:next|mAP)=\S+, )?"
    r"rate=(\S+), (.*?), (-?\d+) images, time remaining=")
_DURATION = re.compile(
    rf"\s*({_DEC}) (nanosecond|microsecond|millisecond|second|minute|hour|day)s?\b")
_UNIT_SECONDS = {"nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0,
                 "minute": 60.0, "hour": 3600.0, "day": 86400.0}

_CLASS_AP = re.compile(
    r"class_id = (\d+), name = (.*?),\s+ap = ([^\s%]+)\s*%(?:\s+\(TP = (\d+), FP = (\d+)\))?")
_PRF = re.compile(rf"for conf_thresh\s*=\s*({_DEC}), precision\s*=\s*([^\s,]+), "
                  r"recall\s*=\s*([^\s,]+), F1[- ]score\s*=\s*([^\s,]+)")
_TPFP = re.compile(rf"for conf_thresh\s*=\s*({_DEC}), TP\s*=\s*(\d+), FP\s*=\s*(\d+), "
                   r"FN\s*=\s*(-?\d+), average IoU\s*=\s*([^\s%]+)\s*%")
_IOU = re.compile(rf"IoU threshold\s*=\s*({_DEC})\s*%")
_MAP_A = re.compile(rf"mean average precision \(mAP(?:@({_DEC}))?\) = ([^\s,]+), or ([^\s%]+) ?%")
_MAP_H = re.compile(rf"mean average precision \(mAP@({_DEC})\)\s*=\s*([^\s%]+)%")
_MAP_SUMMARY = re.compile(rf"mean_average_precision \(mAP(?:@({_DEC}))?\) = ([^\s,]+)")
_LAST = re.compile(
    rf"[Ll]ast accuracy mAP@({_DEC})\s*=\s*([^\s%]+)\s*%(?:,\s*best\s*=\s*([^\s%]+)\s*%)?")
_SAVE = re.compile(r"Saving weights to\s+\"?(.+?)\"?\s*$")
_HEADER = re.compile(r"\s*Id +Name +(.*)")
_ROW = re.compile(r"\s*(\d+) +(.*?) +(-?\d+\.\d+) +(-?\d+)((?: +\S+)*)\s*$")

# Error messages, most specific first.  Each pattern starts where the message starts, so a
# message glued after a progress count or `Loading weights from x...` is cut from there.
_ERROR_RULES = tuple((re.compile(rx), kind) for rx, kind in (
    (r'Cannot load image "(?P<path>.*)"', ErrorKind.CANNOT_LOAD_IMAGE),
    (r"Cannot load image (?P<path>.*?)\s*$", ErrorKind.CANNOT_LOAD_IMAGE),
    (r'failed to load image file "(?P<path>.*?)"', ErrorKind.CANNOT_LOAD_IMAGE),
    (r"Can't open label file\. \(This can be normal only if you use MSCOCO\): ?(?P<path>.*?)\s*$",
     ErrorKind.MISSING_LABEL),
    (r'failed to open annotation file "(?P<path>.*?)"', ErrorKind.MISSING_LABEL),
    (r"Wrong annotation: .*?file: (?P<path>.*?)\s*$", ErrorKind.WRONG_ANNOTATION),
    (r'invalid (?:class id|coordinate) in "(?P<path>.*?)"', ErrorKind.WRONG_ANNOTATION),
    (r"invalid (?:class ID #-?\d+|ground truth: .*) in (?P<path>.*?)\s*$",
     ErrorKind.WRONG_ANNOTATION),
    (r"Couldn't open file: (?P<path>.*?)\s*$", ErrorKind.MISSING_FILE),
    (r"\S+: \S+:\d+: \w+: Assertion `l\.outputs == params\.inputs' failed|"
     r"l\.outputs == params\.inputs|filters in convolutional layer prior to \[yolo\]|"
     r"Type not recognized: |Config file error line|First section must be \[net\]|"
     r"config line #\d+ .*unused or invalid|must be divisible by 32|STEPS policy must have|"
     r"incorrect value batch=|Config file has no sections|Route Layer must specify",
     ErrorKind.CFG_ERROR),
    (r"(?:CUDA Error(?: Prev)?: )?out of memory|Malloc error - possibly out of CPU RAM|"
     r"CUDNN_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation|"
     r"(?:Thread creation failed|Errno 12): Cannot allocate memory|.*: Cannot allocate memory$|"
     r"(?:terminate called after throwing an instance of ')?std::bad_alloc'?|"
     r"Insufficient memory", ErrorKind.OUT_OF_MEMORY),
    # darknet's refusals to go on: bad input in darknet's own words, never a crash
    (r"Cancel the attempt to train a neural network using a CPU\.?|"
     r'argument ".*" specified more than once|no training images available.*|'
     r"There is no \S+ file for mAP calculation!?|"
     r"validation image does not have a corresponding \.txt annotation file.*|"
     r"duplicate validation filename.*", ErrorKind.REFUSED),
    (r"(?:realloc|free|malloc|munmap_chunk|malloc_consolidate|_int_malloc|_int_free)\(\): .*|"
     r"corrupted (?:size vs\. prev_size|double-linked list).*|double free or corruption.*",
     ErrorKind.HEAP_ABORT),
    (r"\S+: \S+:\d+: .*Assertion `.*' failed", ErrorKind.FATAL),
))
_H_FATAL = "* Error message:"


def strip_ansi(text: str) -> str:
    """Remove colour codes, A's clear-screen, OSC titles and BELs (darknet.md §0)."""
    return _ANSI.sub("", text)


def _clean(line: str) -> str:
    """strip_ansi, with a shortcut for the clear-screen A prints before every title."""
    if "\x1b" in line:
        line = line.replace("\x1b[H\x1b[J", "")
        if "\x1b" in line:
            return _ANSI.sub("", line)
    return line.replace("\x07", "") if "\x07" in line else line


def _float(text: str) -> float:
    """glibc's nan/-nan/inf/-inf go straight to float(); Windows prints `-nan(ind)`."""
    try:
        return float(text)
    except ValueError:
        try:
            return float(text.partition("(")[0])
        except ValueError:
            return math.nan


def _fraction(text: str, scale: float = 1.0) -> float | None:
    """A value in [0, 1] (percents divided by 100); None where darknet printed nan."""
    value = _float(text)
    return None if math.isnan(value) else value / scale


def _duration(text: str) -> float | None:
    """H prints times as text (`64.424 milliseconds`); v5.1 adds `load N=…, train=…`."""
    m = _DURATION.match(text.rpartition("train=")[2])
    return float(m[1]) * _UNIT_SECONDS[m[2]] if m else None


def _classify(text: str) -> tuple[ErrorKind, str | None, int] | None:
    """(kind, path, where the message starts) of an error message, None if it is not one."""
    for rx, kind in _ERROR_RULES:
        m = rx.search(text)
        if m:
            return kind, m.groupdict().get("path"), m.start()
    return None


class _Block:
    """One mAP evaluation being read, until the `mean average precision` line closes it."""

    __slots__ = ("classes", "columns", "iou", "conf", "precision", "recall", "f1",
                 "tp", "fp", "fn", "avg_iou")

    def __init__(self) -> None:
        self.classes: list[ClassAP] = []
        self.columns: list[str] | None = None  # H table: names of the value columns
        self.iou = self.conf = self.precision = self.recall = self.f1 = None
        self.tp = self.fp = self.fn = self.avg_iou = None

    def result(self, iou: float | None, value: float | None,
               iteration: int | None) -> MapResult:
        iou = iou if iou is not None else self.iou if self.iou is not None else 0.5
        return MapResult(iou, value, tuple(self.classes), self.conf, self.precision,
                         self.recall, self.f1, self.tp, self.fp, self.fn, self.avg_iou,
                         iteration)


class LogParser:
    """Feed darknet's output in chunks of any size; get events back as lines complete.

    Lines end at `\\n`, `\\r` or `\\r\\n` (progress counters use `\\r`).  Feeding the same
    bytes in any chunking yields the same events.  `lines` counts the lines seen so far,
    each `\\r` segment being one.
    """

    def __init__(self) -> None:
        self.lines = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._carry = ""        # the line still being written
        self._after_cr = False  # the last feed ended with \r: a leading \n pairs with it
        self._out: list[Event] = []
        self._drained: Event | None = None  # the last event handed out by an earlier call
        self._iteration: int | None = None
        self._map_done = False  # a MapResult was emitted since the last iteration
        self._summary: tuple[str, MapSummary | None] = ("", None)  # last `Last accuracy`
        self._block: _Block | None = None  # the mAP block being read, if any
        self._location: str | None = None  # A's error location, waiting for its message
        self._handlers = {word: getattr(self, name) for word, name in _MARKERS.items()}

    # -- input ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        """The events of the lines that `data` completes; a partial line waits for more."""
        return self._feed_text(self._decoder.decode(data))

    def close(self) -> list[Event]:
        """End of output: parse the unterminated last line, flush what is still pending."""
        tail = self._carry + self._decoder.decode(b"", final=True)
        self._carry = ""
        out = self._feed_text(tail + "\n") if tail else []
        if self._location is not None:
            self._out.append(DarknetError(ErrorKind.FATAL, self._location))
            self._location = None
        self._flush_block()
        return out + self._drain()

    def _feed_text(self, text: str) -> list[Event]:
        if self._after_cr and text:
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
        buf = self._carry + text
        newline = buf.rfind("\n")
        cut = max(newline, buf.rfind("\r", newline + 1)) + 1
        self._carry = buf[cut:]
        if cut:
            self._after_cr = cut == len(buf) and buf[-1] == "\r"
            done = buf[:cut]
            if "\r" in done:
                done = done.replace("\r\n", "\n").replace("\r", "\n")
            self.lines += done.count("\n")
            self._scan("\n" + done)
        return self._drain()

    def _scan(self, src: str) -> None:
        """Handle the marked lines of `src`: complete lines, each after a `\\n`."""
        pos = self._after_location(src, 0)
        if pos is None:
            return
        if _A_LOCATION not in src:  # the usual case: no need to know where lines are
            handle = self._handle
            for line, word in _LINE.findall(src, pos):
                handle(line, word)
            return
        while pos is not None:
            m = _LINE.search(src, pos)
            if m is None:
                return
            self._handle(*m.groups())
            pos = self._after_location(src, m.end())

    def _after_location(self, src: str, pos: int) -> int | None:
        """A's error() prints its location, then the message on the very next line, whatever
        it says: handle that line if a location is pending.  None: it is not in `src` yet."""
        if self._location is None:
            return pos
        end = src.find("\n", pos + 1)
        if end < 0:
            return None
        self._on_location_message(_clean(src[pos + 1:end]))
        return end

    def _handle(self, line: str, word: str | None) -> None:
        if "\x1b" in line or "\x07" in line:
            line = _clean(line)
        if word:
            self._handlers[word](line)
        else:
            self._on_digit(line)

    def _dispatch(self, line: str) -> None:
        """Hand a line that began with a colour code, now stripped, to its handler."""
        m = _WORD.match(line)
        if m and m[1] not in ("\x1b", "\x07"):  # not a sequence strip_ansi leaves alone
            self._handle(line, m[1])

    def _drain(self) -> list[Event]:
        out, self._out = self._out, []
        if out:
            self._drained = out[-1]
        return out

    # -- training lines -------------------------------------------------------------------
    def _on_digit(self, line: str) -> None:
        """An iteration line, in A/P or H wording (the hot path: one per iteration)."""
        m = _ITER_AP.match(line)
        if m:
            seconds = float(m[5])
        else:
            m = _ITER_H.match(line)
            if m is None:
                self._on_other_digit(line)
                return
            seconds = _duration(m[5])
        number, loss, avg, rate, _, images = m.groups()
        if self._block is not None:  # a block without its mAP line ends when training goes on
            self._flush_block()
        self._iteration = number = int(number)
        self._map_done = False
        try:
            it = Iteration(number, float(loss), float(avg), float(rate), seconds, int(images))
        except ValueError:  # nan(ind) and the like
            it = Iteration(number, _float(loss), _float(avg), _float(rate), seconds, int(images))
        self._out.append(it)

    def _on_other_digit(self, line: str) -> None:
        """An H table row, or an error message glued to a progress count."""
        if self._block is not None and self._block.columns is not None and self._on_row(line):
            return
        # `\r%d` progress glues the next stderr message to its count: `8Cannot load image`
        rest = line.lstrip().lstrip("0123456789")
        if rest[:1].isalpha() or rest[:1] == "*":
            self._on_error(rest)

    def _on_save(self, line: str) -> None:
        m = _SAVE.search(line)
        if m:
            self._out.append(CheckpointSaved(m[1]))

    # -- mAP ------------------------------------------------------------------------------
    def _open_block(self) -> _Block:
        if self._block is None:
            self._block = _Block()
        return self._block

    def _on_start(self, line: str) -> None:
        self._flush_block()

    def _on_class_ap(self, line: str) -> None:
        m = _CLASS_AP.search(line)
        if m:
            tp, fp = (int(m[4]), int(m[5])) if m[4] else (None, None)
            self._open_block().classes.append(
                ClassAP(int(m[1]), m[2], _fraction(m[3], 100.0), tp, fp))

    def _on_header(self, line: str) -> None:
        m = _HEADER.match(line)
        if m:
            self._open_block().columns = m[1].split()

    def _on_row(self, line: str) -> bool:
        """An H table row: `Id Name AP TP …`; AP and TP come first in every version."""
        m = _ROW.match(line)
        if not m:
            return False
        block = self._block
        values = [m[3], m[4], *m[5].split()]
        fp = None
        if len(values) == len(block.columns) and "FP" in block.columns:
            fp_text = values[block.columns.index("FP")]
            fp = int(fp_text) if fp_text.isdigit() else None
        block.classes.append(ClassAP(int(m[1]), m[2], _fraction(m[3], 100.0), int(m[4]), fp))
        return True

    def _on_conf(self, line: str) -> None:
        m = _PRF.search(line)
        if m:
            block = self._open_block()
            block.conf = float(m[1])
            block.precision, block.recall, block.f1 = (_fraction(v) for v in m.group(2, 3, 4))
            return
        m = _TPFP.search(line)
        if m:
            block = self._open_block()
            block.conf = float(m[1])
            block.tp, block.fp, block.fn = int(m[2]), int(m[3]), int(m[4])
            block.avg_iou = _fraction(m[5], 100.0)

    def _on_iou(self, line: str) -> None:
        m = _IOU.search(line)
        if m:
            self._open_block().iou = float(m[1]) / 100.0

    def _on_map(self, line: str) -> None:
        m = _MAP_A.search(line)
        if m:  # the fraction is printed with more digits than the percent
            self._finish_block(m[1], _fraction(m[2]))
            return
        m = _MAP_H.search(line)
        if m:
            self._finish_block(m[1], _fraction(m[2], 100.0))

    def _on_summary(self, line: str) -> None:
        """A's `mean_average_precision (mAP@0.50) = x` repeats the block it follows."""
        m = _MAP_SUMMARY.search(line)
        if m and not self._map_done:
            self._finish_block(m[1], _fraction(m[2]))

    def _on_last(self, line: str) -> None:
        """A repeats the same `Last accuracy` on every iteration until the next mAP."""
        m = _LAST.search(line)
        if not m:
            return
        if m[0] != self._summary[0]:
            best = _fraction(m[3], 100.0) if m[3] else None
            self._summary = m[0], MapSummary(float(m[1]), _fraction(m[2], 100.0), best)
        self._out.append(self._summary[1])

    def _finish_block(self, iou: str | None, value: float | None) -> None:
        block, self._block = self._open_block(), None
        self._out.append(block.result(float(iou) if iou else None, value, self._iteration))
        self._map_done = True

    def _flush_block(self) -> None:
        """Emit a block cut short (no mAP line) with map None, so its numbers survive."""
        if self._block is not None:
            self._finish_block(None, None)

    # -- errors ---------------------------------------------------------------------------
    def _on_error(self, line: str) -> None:
        text = line.strip()
        if text.startswith(_A_LOCATION):
            self._location = text
        elif text.startswith(_H_FATAL):
            self._on_fatal(text[len(_H_FATAL):].strip())
        else:
            hit = _classify(text)
            if hit:
                kind, path, start = hit
                self._out.append(DarknetError(kind, text[start:], path))

    def _on_location_message(self, line: str) -> None:
        """The perror(message) that follows A's `Darknet error location: …`."""
        self._location = None
        message = line.strip()
        last = self._out[-1] if self._out else self._drained
        if isinstance(last, DarknetError) and message.startswith(last.message):
            return  # e.g. ` CUDA Error: out of memory` was printed just before error()
        self._on_fatal(message)

    def _on_fatal(self, message: str) -> None:
        """A message darknet died of: FATAL unless it names a more specific cause."""
        hit = _classify(message)
        kind, path = (hit[0], hit[1]) if hit else (ErrorKind.FATAL, None)
        self._out.append(DarknetError(kind, message, path))


def parse_text(text: str) -> list[Event]:
    """All events of a complete output, already decoded."""
    parser = LogParser()
    return parser._feed_text(text) + parser.close()


def parse_file(path: str | Path, chunk_size: int = 1 << 20) -> list[Event]:
    """All events of a saved log, read in chunks so that big logs need little memory."""
    parser = LogParser()
    events: list[Event] = []
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            events += parser.feed(chunk)
    return events + parser.close()
