"""The sweep spec as data: its parameters, budget, early-stopping rules and the checks
that need more than the file (the cfg's max_batches, the workers there are)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from farm.darknet.cfg import NET_KEYS
from farm.errors import BadInput
from farm.queues import TRAIN_DEFAULT
from farm.settings import EVAL_EVERY

OBJECTIVES = {"map50": "max", "min_avg_loss": "min", "screens_map50": "max"}
RANGES = ("uniform", "log_uniform")
#: parameters that set two [net] keys from one value ("64/16")
JOINT = {"batch/subdivisions": ("batch", "subdivisions"), "width/height": ("width", "height")}
PARAMETERS = sorted(set(NET_KEYS) | set(JOINT) | {"cfg"})
MAX_TRIALS = 10_000

@dataclass(frozen=True)
class Param:
    """One searched parameter: grid values (or random choices), or a random range."""

    name: str
    values: tuple[str, ...] = ()  # canonical strings: "0.001", "64/16", "/abs/a.cfg"
    range: str = ""               # "" for values, else "uniform" or "log_uniform"
    low: float = 0.0
    high: float = 0.0


@dataclass(frozen=True)
class Budget:
    iterations: int | None = None
    wall_time: float | None = None  # seconds


@dataclass(frozen=True)
class MedianRule:
    grace: int = 0        # iterations before the rule may stop a trial
    min_trials: int = 2   # other trials that must have reached the same iteration


@dataclass(frozen=True)
class EarlyStopping:
    zero_map_after: int | None = None
    median: MedianRule | None = None


@dataclass(frozen=True)
class SweepSpec:
    path: str                       # the spec file (absolute)
    data: str | None                # obj.data (absolute); None when `recipe` makes it
    cfg: str | None                 # base cfg (absolute); None when parameters.cfg chooses
    weights: str | None
    fixed: dict[str, str]           # base.set, validated
    parameters: tuple[Param, ...]
    search: str                     # "grid" | "random"
    trials: int                     # how many trials the spec expands into
    seed: int = 0
    concurrency: int = 1
    queue: str | None = None
    budget: Budget = field(default_factory=Budget)
    objective: str = "map50"
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    policy: dict[str, str] = field(default_factory=dict)
    eval_every: int = EVAL_EVERY
    name: str = ""
    #: base.recipe in full (farm.datasets.recipe), when the farm builds the dataset
    recipe: dict[str, Any] | None = None
    #: lines of the rules checked once the cfgs are read ("eval_every", "zero_map_after",
    #: "grace"), so that those errors name the spec's line too
    lines: dict[str, int] = field(default_factory=dict)
    #: eval.screens: a screens set's obj.data every trial's evaluations also score
    eval_screens: str | None = None

    @property
    def goal(self) -> str:
        """"max" or "min": which way is better for the objective."""
        return OBJECTIVES[self.objective]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSpec":
        d = dict(d)
        d["parameters"] = tuple(Param(**{**p, "values": tuple(p["values"])})
                                for p in d["parameters"])
        d["budget"] = Budget(**d["budget"])
        early = dict(d["early_stopping"])
        early["median"] = MedianRule(**early["median"]) if early.get("median") else None
        d["early_stopping"] = EarlyStopping(**early)
        return cls(**d)


def check_rules_can_fire(spec: SweepSpec, max_batches: int) -> None:
    """Refuse early-stopping rules that can never stop a trial of `max_batches` (the
    longest trial) with evaluations every `spec.eval_every` iterations (as darknet can
    write them): a rule acts only on a running trial, and the final evaluation comes
    after the trial ended."""
    every = spec.eval_every
    after = spec.early_stopping.zero_map_after
    if after:
        first = -(-after // every) * every
        if first >= max_batches:
            raise BadInput(
                f"early_stopping.zero_map_after: {after} can never fire: the first "
                f"evaluation at or after iteration {after} is at {first} (eval_every "
                f"{every}), and the trials end at iteration {max_batches}", path=spec.path,
                line=spec.lines.get("zero_map_after"),
                hint=f"lower eval_every or zero_map_after below {max_batches}, or drop the rule")
    median = spec.early_stopping.median
    if median is None:
        return
    if median.grace >= max_batches:
        raise BadInput(f"early_stopping.median.grace: {median.grace} can never fire: the "
                       f"trials end at iteration {max_batches}", path=spec.path,
                       line=spec.lines.get("grace"), hint=f"use a grace below {max_batches}")
    if spec.objective in ("map50", "screens_map50") and every >= max_batches:
        raise BadInput(f"early_stopping.median can never fire on {spec.objective}: the first "
                       f"evaluation "
                       f"(eval_every {every}) is not before the trials end at iteration "
                       f"{max_batches}", path=spec.path, line=spec.lines.get("eval_every"),
                       hint="lower eval_every, or rank by min_avg_loss")


def check_concurrency(spec: SweepSpec, gpu_workers: int) -> str | None:
    """A warning when the spec asks for more trials at once than there are GPU workers
    (the extra trials wait in the queue; nothing hangs), else None."""
    queue = spec.queue or TRAIN_DEFAULT
    if gpu_workers <= 0:
        return (f"no worker is consuming queue {queue!r} now: the trials wait in the queue "
                f"until one starts (`farm up` starts a gpu worker)")
    if spec.concurrency > gpu_workers:
        return (f"concurrency {spec.concurrency} is above the {gpu_workers} worker(s) on "
                f"queue {queue!r}: {spec.concurrency - gpu_workers} trial(s) at a time will "
                f"wait in the queue; set concurrency: {gpu_workers} or start more workers")
    return None
