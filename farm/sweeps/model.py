"""Sweeps and trials as data (stored in Redis as JSON by farm.store.sweeps).

A trial is planned once, when the sweep is submitted, and never re-planned: resuming a
sweep after a restart of the farm reads the same trials back. A trial's run id is
written exactly once (store.assign_run), which is what keeps a trial from running twice.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class SweepState(str, Enum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class TrialState(str, Enum):
    PENDING = "pending"      # not submitted yet
    BUILDING = "building"    # not submitted yet: waits for its recipe's dataset
    QUEUED = "queued"        # its run waits for a GPU worker
    RUNNING = "running"
    STOPPING = "stopping"    # asked to stop (early stopping or budget); darknet not dead yet
    COMPLETED = "completed"
    FAILED = "failed"        # the run failed, or the trial could not be submitted
    STOPPED = "stopped"      # stopped early by the sweep: `Trial.stop_reason` says why
    CANCELLED = "cancelled"  # the sweep (or a person) cancelled it

    @property
    def active(self) -> bool:
        """Holds (or will soon hold) a GPU."""
        return self in (TrialState.QUEUED, TrialState.RUNNING, TrialState.STOPPING)

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.FAILED, TrialState.STOPPED,
                        TrialState.CANCELLED)


#: what a trial's plan holds (written once); the other fields are what happened since
PLAN_FIELDS = ("params", "cfg", "overrides", "recipe_key")


def new_sweep_id() -> str:
    return time.strftime("s%y%m%d-") + uuid.uuid4().hex[:6]


@dataclass
class Trial:
    index: int
    params: dict[str, str]         # what the spec chose, for people: {"learning_rate": "0.002"}
    cfg: str                       # base cfg (absolute)
    overrides: dict[str, str]      # every [net] value the run is submitted with
    recipe_key: str | None = None  # its dataset recipe (farm.datasets.recipe), if any
    run_id: str | None = None      # written once (see store.assign_run)
    claimed_at: float | None = None  # a controller began submitting it (service._submit)
    enqueued_at: float | None = None
    task_id: str | None = None
    stop_reason: str = ""          # why the sweep stopped it
    stopped_at: float | None = None
    error: str = ""                # why it could not be submitted
    cancelled: bool = False        # the sweep was cancelled before this trial started
    #: the ended run as the leaderboard shows it (controller.snapshot): a controller
    #: never reads a finished trial's run again, so a tick costs the same at trial 200
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def state_dict(self) -> dict[str, Any]:
        """What happened to the trial: every field but its plan, index and run id (the
        run id has a write-once hash of its own)."""
        return {k: getattr(self, k) for k in _TRIAL_STATE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        if d.keys() <= _TRIAL_FIELDS:
            return cls(**d)
        return cls(**{k: v for k, v in d.items() if k in _TRIAL_FIELDS})


_TRIAL_FIELDS = frozenset(f.name for f in fields(Trial))
_TRIAL_STATE = tuple(f.name for f in fields(Trial)
                     if f.name not in PLAN_FIELDS and f.name not in ("index", "run_id"))


@dataclass
class Sweep:
    id: str
    spec: dict[str, Any]           # SweepSpec.to_dict(): the sweep never re-reads the file
    created_at: float
    host: str
    name: str = ""
    state: SweepState = SweepState.RUNNING
    ended_at: float | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    #: each trial cfg's text, read where the sweep was submitted: the controller (a cpu
    #: worker, maybe on another machine) never needs the files
    cfgs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sweep":
        d = dict(d)
        d["state"] = SweepState(d["state"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
