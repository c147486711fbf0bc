"""Retention: which of a run's weights files the farm keeps, and removing the rest.

darknet writes a weights file every 100 iterations or so, each as large as the network
(yolov4: 245 MB), and removes none; one night of sweeps would fill the disk. A run needs:
the newest checkpoint written while the loss was finite (its resume point and, at the
end, its final weights), `keep_checkpoints` more of the newest good ones if asked,
best.weights (the best evaluation's copy, farm.eval.checkpoints) and the checkpoints pinned
for an evaluation not recorded yet (eval/queue/: an eval worker on another host pulls
them from here). Everything else goes:

- as a checkpoint is recorded (farm.runs.supervisor): darknet's file is moved, not
  copied, into checkpoints/ (darknet opens a new file at each save and never reads an old
  one); a second file of the same weights (pjreddie writes `.backup` and `_N` at once) is
  removed; good checkpoints older than the kept ones are removed;
- when an attempt ends: whatever is left in its backup/ (weights written after the loss
  went non-finite, a file cut short by a kill);
- `farm gc` (farm.gc): the same for finished runs, and pins whose evaluation is recorded.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from farm.runs.model import Run
from farm.settings import Settings


@dataclass(frozen=True)
class Waste:
    """A file the farm no longer needs: its size and why it can go."""

    path: Path
    bytes: int
    why: str


@dataclass(frozen=True)
class Retention:
    on: bool = True            # False: darknet's files stay as written (settings.retention 0)
    keep_checkpoints: int = 0  # good checkpoints kept beside the newest

    @classmethod
    def from_settings(cls, settings: Settings) -> "Retention":
        return cls(bool(settings.retention), settings.keep_checkpoints)

    def take(self, source: str | os.PathLike, dest: Path) -> None:
        """Make darknet's file `source` the farm's checkpoint `dest`: moved (one rename),
        or copied when retention is off or `source` is on another filesystem."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.on:
            try:
                os.replace(source, dest)
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
        tmp = dest.with_suffix(".part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
        if self.on:
            os.remove(source)


def kept_checkpoints(run: Run, keep: int) -> set[str]:
    """The farm's copies to keep: the newest good checkpoint and the `keep` newest good
    ones before it (by when they were saved: a restart may resume below an older one)."""
    good = sorted((c for c in run.checkpoints if c.finite and c.path != c.source),
                  key=lambda c: c.saved_at, reverse=True)
    paths = list(dict.fromkeys(c.path for c in good))[:1 + max(keep, 0)]
    return set(paths) | ({run.good_checkpoint} if run.good_checkpoint else set())


def checkpoint_waste(run: Run, folder: Path, keep: int) -> list[Waste]:
    """Files in the run's checkpoints/ `folder` that are not kept (kept_checkpoints)."""
    kept = kept_checkpoints(run, keep)
    return [Waste(p, _size(p), "an older checkpoint" if p.suffix == ".weights"
                  else "a copy cut short")
            for p in _files(folder) if str(p) not in kept]


def backup_waste(workdir: str | os.PathLike) -> list[Waste]:
    """darknet's files left in an attempt's backup/: what the farm needed was moved out."""
    return [Waste(p, _size(p), "darknet's file (the farm keeps its own copies)")
            for p in _files(Path(workdir) / "backup")]


def pin_waste(run_dir: Path, evaluated: Iterable[int]) -> list[Waste]:
    """Pinned checkpoints (eval/queue/iter-N-*.weights) whose evaluation is recorded; the
    others wait for an evaluation, maybe on another host, and stay."""
    done = set(evaluated)
    out = []
    for p in _files(run_dir / "eval" / "queue"):
        try:
            iteration = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if iteration in done:
            out.append(Waste(p, _size(p), f"pinned for the evaluation of iteration "
                                          f"{iteration}, which is recorded"))
    return out


def run_waste(run: Run, run_dir: Path, keep: int, evaluated: Iterable[int]) -> list[Waste]:
    """Everything a finished run no longer needs, by the rules above."""
    out: list[Waste] = []
    for workdir in sorted(run_dir.glob("attempt-*")):
        out += backup_waste(workdir)
    out += checkpoint_waste(run, run_dir / "checkpoints", keep)
    return out + pin_waste(run_dir, evaluated)


def remove(items: Iterable[Waste]) -> int:
    """Remove the files; the bytes freed (a file already gone frees nothing)."""
    freed = 0
    for item in items:
        try:
            os.remove(item.path)
            freed += item.bytes
        except FileNotFoundError:
            pass
    return freed


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file())
    except FileNotFoundError:
        return []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
