"""Which darknet is this, and which command line does it understand?

Three dialects are in use (docs/darknet.md): AlexeyAB, hank-ai and pjreddie (Debian's
package). They take different flags, and pjreddie reads an unknown flag placed after the
cfg as the weights path, so the farm builds only the flags the detected dialect knows.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

from farm.errors import BadInput, DarknetNotFound


class Dialect(str, Enum):
    ALEXEYAB = "alexeyab"
    HANKAI = "hankai"
    PJREDDIE = "pjreddie"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: Dialect | str) -> Dialect:
        """The dialect a flag, setting, inventory or record names (`hank-ai` and
        `AlexeyAB` too): names are read at the edge, the farm passes Dialects."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower().replace("-", "").replace("_", ""))
        except ValueError:
            raise BadInput(f"unknown darknet dialect {value!r}",
                           hint=f"use one of: {', '.join(NAMES)}") from None

    @property
    def has_map(self) -> bool:
        """`detector map` and `-map` exist (pjreddie has neither)."""
        return self is not Dialect.PJREDDIE

    @property
    def honours_groups(self) -> bool:
        """[route] groups= is read (pjreddie ignores it: "Unused field"), so the layers
        after a grouped route, and the weights that fill them, differ."""
        return self is not Dialect.PJREDDIE


    @property
    def who(self) -> str:
        """The darknet as messages name it."""
        return _WHO[self]


#: the dialects' names, as flags, settings and the inventory spell them
NAMES = tuple(d.value for d in Dialect)
_WHO = {Dialect.ALEXEYAB: "AlexeyAB's darknet", Dialect.HANKAI: "hank-ai's darknet",
        Dialect.PJREDDIE: "pjreddie's (Debian's) darknet"}


def resolve_binary(darknet: str) -> str:
    """The absolute path of the darknet binary, or a clear error saying how to get one."""
    path = shutil.which(darknet)
    if path is None:
        raise DarknetNotFound(
            f"darknet binary {darknet!r} not found",
            hint="install it (Debian: apt-get install darknet) or set FARM_DARKNET "
                 "to its path")
    return path


def classify_banner(text: str) -> Dialect:
    """Tell the dialect from what the binary prints when run without a command."""
    if "Darknet V" in text or "Darknet v" in text or "hank.ai" in text.lower():
        return Dialect.HANKAI
    alexeyab_marks = ("GPU isn't used", "CUDA-version", "Used AVX", "OpenCV isn't used",
                      "OpenCV version", "compute_capability")
    if any(mark in text for mark in alexeyab_marks):
        return Dialect.ALEXEYAB
    return Dialect.PJREDDIE


#: Seconds darknet may take to print its usage or version (it loads its libraries, CUDA's
#: included, first); one that takes longer is refused as not runnable.
PROBE_TIMEOUT = 20


@lru_cache(maxsize=16)
def _detect_cached(path: str, stamp: str) -> Dialect:
    """The dialect of the binary at `path` (`stamp`: its size and mtime), as remembered,
    else read from what it prints without a command and with `version`."""
    known = _remembered().get(f"{path} {stamp}")
    if known in Dialect._value2member_map_:
        return Dialect(known)
    procs = []
    for argv in ([path], [path, "version"]):  # side by side: each loads darknet's libraries
        try:
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        except OSError as e:
            raise DarknetNotFound(f"darknet at {path} could not be run: {e}",
                                  hint="check that it is executable for this user") from None
    out = []
    for proc in procs:
        try:
            out.append(proc.communicate(timeout=PROBE_TIMEOUT)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
                p.wait()
            raise DarknetNotFound(f"darknet at {path} did not answer within {PROBE_TIMEOUT} s",
                                  hint="check that it runs for this user") from None
    found = classify_banner("\n".join(out))
    _remember(f"{path} {stamp}", found.value)
    return found


#: Where detected dialects are remembered across commands (keyed by the binary's path,
#: size and mtime): running darknet twice costs a `farm train` 0.3-1.7 s.
DIALECT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "farm" / \
    "darknet-dialects.json"


def _remembered() -> dict[str, str]:
    try:
        data = json.loads(DIALECT_CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, dialect: str) -> None:
    """Best effort: a cache that cannot be written only costs the next detection."""
    try:
        DIALECT_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = DIALECT_CACHE.with_name(f".{DIALECT_CACHE.name}.{os.getpid()}")
        tmp.write_text(json.dumps({**_remembered(), key: dialect}))
        os.replace(tmp, DIALECT_CACHE)
    except OSError:
        pass


def detect(darknet: str, configured: str = "auto") -> Dialect:
    """The dialect of `darknet`: the configured one, or detected from its banner."""
    path = resolve_binary(darknet)
    if configured != "auto":
        return Dialect.of(configured)
    st = os.stat(path)
    return _detect_cached(path, f"{st.st_size} {st.st_mtime_ns}")


def _absolute(*paths) -> list[str]:
    """darknet opens every file relative to its cwd, which the farm sets to a folder of
    its own (an attempt's, a scratch one): paths from a command line must be absolute."""
    return [os.path.abspath(os.fspath(p)) for p in paths]


#: pjreddie writes `<cfg>.backup` every 100 iterations (and `_N` at 100..900, then every
#: 10000; examples/detector.c:130-145): the only cadence it has (darknet.md §4).
PJREDDIE_SAVE_EVERY = 100
#: AlexeyAB's `_last` default (`savelast=` in obj.data, builds since 2023-08) and
#: hank-ai's hard-coded `_last` interval (darknet.md §2).
LAST_EVERY = 100


@dataclass(frozen=True)
class Cadence:
    """How often a dialect writes weights for an evaluation every `every` iterations."""

    every: int                    # eval_every as darknet can honour it
    data: dict[str, str]          # obj.data keys that set it (AlexeyAB)
    argv: tuple[str, ...] = ()    # flags that set it (hank-ai)
    note: str | None = None       # what the farm changed, for a warning at submit


def checkpoint_cadence(dialect: Dialect, eval_every: int) -> Cadence:
    """The checkpoint cadence for evaluations every `eval_every` iterations. AlexeyAB
    reads `savelast=` from obj.data and hank-ai takes `-saveweights N`, so the farm asks
    them for what it needs; pjreddie writes every 100, so `eval_every` is rounded to
    that (darknet.md §2-§4). Rollbacks keep their 100-iteration granularity: AlexeyAB's
    `_last` is set to gcd(eval_every, 100)."""
    d = Dialect.of(dialect)
    if eval_every <= 0 or eval_every % LAST_EVERY == 0:
        return Cadence(eval_every, {})
    if d is Dialect.ALEXEYAB:
        return Cadence(eval_every, {"savelast": str(math.gcd(eval_every, LAST_EVERY))})
    if d is Dialect.HANKAI:
        return Cadence(eval_every, {}, ("-saveweights", str(eval_every)))
    every = max(PJREDDIE_SAVE_EVERY, (eval_every + PJREDDIE_SAVE_EVERY // 2)
                // PJREDDIE_SAVE_EVERY * PJREDDIE_SAVE_EVERY)
    return Cadence(every, {}, note=f"eval_every {eval_every} rounded to {every}: "
                                   f"pjreddie's darknet (Debian's) writes weights every "
                                   f"{PJREDDIE_SAVE_EVERY} iterations only")


def train_argv(dialect: Dialect, binary: str, data: str, cfg: str,
               weights: str | None = None, *, with_map: bool = False,
               gpus: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """The `detector train` command line, with only the flags `dialect` knows (`extra`:
    flags of the dialect's own, e.g. hank-ai's -saveweights from checkpoint_cadence)."""
    data, cfg = _absolute(data, cfg)
    weights = _absolute(weights)[0] if weights else None
    if dialect is Dialect.HANKAI:
        # Order-free parser; files are recognised by existence and extension.
        argv = [binary, "detector", "train", data, cfg]
        argv += [weights] if weights else []
        argv += ["-dont_show", "-nocolour"] + (["-map"] if with_map else [])
    elif dialect is Dialect.ALEXEYAB:
        argv = [binary, "detector", "train", data, cfg] + ([weights] if weights else [])
        argv += ["-dont_show"] + (["-map"] if with_map else [])
    else:
        argv = [binary, "detector", "train", data, cfg] + ([weights] if weights else [])
    if gpus:
        argv += ["-gpus", gpus]
    return argv + list(extra)


def map_argv(binary: str, data, cfg, weights, *, points: int, iou_thresh: float,
             thresh: float) -> list[str]:
    """`detector map` (AlexeyAB, hank-ai): mAP of `weights` on data's valid list."""
    return [binary, "detector", "map", *_absolute(data, cfg, weights), "-points",
            str(points), "-iou_thresh", str(iou_thresh), "-thresh", str(thresh)]


def valid_argv(binary: str, data, cfg, weights) -> list[str]:
    """`detector valid` (pjreddie): detections on data's valid list into results/."""
    return [binary, "detector", "valid", *_absolute(data, cfg, weights)]


def train_stdin(dialect: Dialect) -> bytes | None:
    """hank-ai's CPU builds ask `Type "yes" to begin training`; EOF would abort them."""
    return b"yes\n" if dialect is Dialect.HANKAI else None
