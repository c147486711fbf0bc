"""Which darknet is this, and which command line does it understand?

Three dialects are in use (docs/darknet.md): AlexeyAB, hank-ai and pjreddie (Debian's
package). They take different flags, and pjreddie reads an unknown flag placed after the
cfg as the weights path, so the farm builds only the flags the detected dialect knows.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from enum import Enum
from functools import lru_cache

from farm.errors import DarknetNotFound


class Dialect(str, Enum):
    ALEXEYAB = "alexeyab"
    HANKAI = "hankai"
    PJREDDIE = "pjreddie"

    @property
    def has_map(self) -> bool:
        """`detector map` and `-map` exist (pjreddie has neither)."""
        return self is not Dialect.PJREDDIE


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


@lru_cache(maxsize=16)
def _detect_cached(path: str, mtime: float) -> Dialect:
    out = []
    for argv in ([path], [path, "version"]):
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DarknetNotFound(f"darknet at {path} could not be run: {e}",
                                  hint="check that it is executable for this user") from None
        out.append(proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace"))
    return classify_banner("\n".join(out))


def detect(darknet: str, configured: str = "auto") -> Dialect:
    """The dialect of `darknet`: the configured one, or detected from its banner."""
    path = resolve_binary(darknet)
    if configured != "auto":
        return Dialect(configured)
    return _detect_cached(path, os.path.getmtime(path))


def _absolute(*paths) -> list[str]:
    """darknet opens every file relative to its cwd, which the farm sets to a folder of
    its own (an attempt's, a scratch one): paths from a command line must be absolute."""
    return [os.path.abspath(os.fspath(p)) for p in paths]


def train_argv(dialect: Dialect, binary: str, data: str, cfg: str,
               weights: str | None = None, *, with_map: bool = False,
               gpus: str | None = None) -> list[str]:
    """The `detector train` command line, with only the flags `dialect` knows."""
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
    return argv


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
