"""Free disk space for training: what darknet writes next, and whether it fits.

darknet does not look at what fwrite returns: on a full disk it writes a truncated
weights file and trains on, and the farm would take that file as its resume point. So
the free space of the filesystem darknet writes to is checked before each attempt and,
every `disk_check_interval` seconds, while it trains, against the size of the weights
files darknet may write next (counted from the cfg by farm.darknet.weights). Short of
it, the attempt stops as `no_space` before darknet writes; that is not the run's fault:
the run waits, queued, until the space is back and resumes from its newest good
checkpoint (farm.runs.service).

Two thresholds, so that a run near the limit does not stop at each checkpoint: training
goes on while FILES_AHEAD files and the margin fit; an attempt starts only when twice
those files fit, because darknet's newest files land before the farm removes the ones
they replace (farm.runs.retention).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from farm.darknet.cfg import Cfg
from farm.darknet.dialect import Dialect
from farm.darknet.memory import size_text
from farm.darknet.weights import expected_weights_bytes

#: Weights files that may land between two checks: darknet writes up to two at one save
#: (pjreddie `.backup` and `_N`, AlexeyAB `_last` and `_N`), and an evaluation on this
#: host copies one to best.weights.
FILES_AHEAD = 3


@dataclass(frozen=True)
class Need:
    """The free space a run needs: `weights` bytes per weights file, `margin` beyond."""

    weights: int
    margin: int

    @property
    def to_train(self) -> int:
        return FILES_AHEAD * self.weights + self.margin

    @property
    def to_start(self) -> int:
        return 2 * FILES_AHEAD * self.weights + self.margin

    def explain(self, files: int) -> str:
        return (f"{files} weights files of {size_text(self.weights)} + disk_margin "
                f"{size_text(self.margin)}")


@dataclass(frozen=True)
class Shortage:
    path: str
    free: int
    needed: int
    why: str  # what the needed bytes are made of

    def __str__(self) -> str:
        return (f"{self.path} has {self.free} bytes free ({size_text(self.free)}), "
                f"needs {self.needed} ({size_text(self.needed)}: {self.why})")


def need_for(cfg: Cfg, dialect: Dialect, margin_mib: int,
             known: Iterable[str | os.PathLike] = ()) -> Need:
    """What training `cfg` needs: its weights file's size as `dialect` lays it out, else
    (a layer type that cannot be sized here) the largest of the `known` weights files
    (the start weights, the run's checkpoints)."""
    size = expected_weights_bytes(cfg, dialect=dialect)
    if size is None:
        size = max((_size(p) for p in known if p), default=0)
    return Need(size, margin_mib << 20)


def _size(path: str | os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (or of its
    nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def shortage(path: str | os.PathLike, needed: int, why: str) -> Shortage | None:
    """A Shortage when the filesystem of `path` has fewer than `needed` bytes free."""
    free = free_bytes(path)
    return None if free >= needed else Shortage(str(path), free, needed, why)
