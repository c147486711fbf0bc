"""Runs, attempts and checkpoints as data (stored in Redis as JSON).

A run is one training job; each darknet process it starts is an attempt, which ends
with an outcome held as data. The lineage of attempts, with what changed between them
and why, is what `farm status` and the board show.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from farm.settings import EVAL_EVERY


class Outcome(str, Enum):
    COMPLETED = "completed"
    DIVERGED = "diverged"    # nan/inf avg loss, or a loss above the bound after burn-in
    CRASHED = "crashed"      # killed by a signal (glibc abort, segfault) or exited unfinished
    STALLED = "stalled"      # no iteration for stall_timeout seconds
    OUT_OF_MEMORY = "out_of_memory"  # CUDA/host allocation failed, or the kernel's OOM kill
    BAD_INPUT = "bad_input"  # cfg or data errors, darknet's own refusals: never retried
    CANCELLED = "cancelled"
    LOST = "lost"            # its worker died; the lease expired
    NO_SPACE = "no_space"    # stopped by the farm: too little free disk for the next weights


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)


def new_run_id() -> str:
    return time.strftime("r%y%m%d-") + uuid.uuid4().hex[:6]


@dataclass
class Attempt:
    number: int
    command: list[str]
    hyper: dict[str, str]            # the values darknet trained with (farm.runs.effective)
    start_weights: str | None
    start_iteration: int
    host: str
    workdir: str
    log_path: str
    started_at: float
    changes: dict[str, list[str]] = field(default_factory=dict)  # key -> [before, after]
    reason: str = ""                 # why this attempt exists (first, or the restart reason)
    ended_at: float | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    last_iteration: int | None = None
    message: str = ""                # what ended it, in words (file and line for bad input)
    first_bad_iteration: int | None = None
    first_bad_at: float | None = None  # when the farm read that line (wall clock)
    pid: int | None = None
    #: the same keys as the run asked for them (the base cfg with the run's --set)
    requested: dict[str, str] = field(default_factory=dict)
    #: the rate it warms up to: learning_rate as the cfg means it, before the steps darknet
    #: had already passed were folded into hyper["learning_rate"] (farm.runs.schedule)
    rate: float | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def rate_value(self) -> float:
        if self.rate is not None:
            return self.rate
        return float(self.hyper.get("learning_rate") or self.requested.get("learning_rate")
                     or 0.001)


@dataclass
class Checkpoint:
    iteration: int
    path: str             # the farm's copy (darknet's own files may be overwritten later)
    source: str           # the darknet file it was copied from
    finite: bool          # the loss was still finite when darknet wrote it
    attempt: int
    saved_at: float


@dataclass
class Run:
    id: str
    data: str             # obj.data as submitted (absolute)
    cfg: str              # base cfg as submitted (absolute)
    weights: str | None   # start weights (absolute) or None
    base_dir: str         # where relative paths inside obj.data and the lists are resolved
    overrides: dict[str, str]
    policy: dict[str, Any]
    host: str             # submitted from
    created_at: float
    max_batches: int
    state: RunState = RunState.QUEUED
    attempts: list[Attempt] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    good_checkpoint: str | None = None   # the farm's copy of the newest finite checkpoint
    message: str = ""
    task_id: str | None = None
    worker: str | None = None
    ended_at: float | None = None
    inputs_checked: bool = False
    sweep: str | None = None
    trial: int | None = None              # its trial's index in `sweep`
    #: evaluate a finite checkpoint every this many iterations (and the final one)
    eval_every: int = EVAL_EVERY
    #: the host whose files `data` and `weights` name; None: every worker sees them
    #: (one machine, shared storage). A worker elsewhere fetches them first (farm.remote.flow).
    origin: str | None = None
    #: the Celery queue the run trains on (None: `gpu`); `host.<name>` pins a host
    queue: str | None = None
    #: the base cfg's text as submitted: a run trains what was asked even if the file is
    #: edited later or lives on another machine
    cfg_text: str | None = None
    #: the iteration darknet resumes at from the start weights (their `seen` / batch)
    weights_iteration: int = 0
    #: what the farm changed or could not honour at submit (eval_every rounded, ...)
    warnings: list[str] = field(default_factory=list)
    #: a screens set (its obj.data) every evaluation also scores, by tiled detection over
    #: whole screenshots (farm.eval.screens); None: tile mAP only
    eval_screens: str | None = None
    #: what picks the run's best checkpoint: "map50" (tile mAP) or "screens_map50"
    rank_by: str = "map50"

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def last_iteration(self) -> int:
        its = [a.last_iteration for a in self.attempts if a.last_iteration is not None]
        return max(its) if its else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        d = dict(d)
        d["state"] = RunState(d["state"])
        d["attempts"] = [_attempt(a) for a in d.get("attempts", [])]
        d["checkpoints"] = [Checkpoint(**c) for c in d.get("checkpoints", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _attempt(d: dict[str, Any]) -> Attempt:
    d = dict(d)
    if d.get("outcome"):
        d["outcome"] = Outcome(d["outcome"])
    known = {f.name for f in fields(Attempt)}
    return Attempt(**{k: v for k, v in d.items() if k in known})
