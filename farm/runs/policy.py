"""What to do after an attempt ends: the divergence and crash policy, as a pure function.

No darknet fork stops on nan, and after nan every weights file it writes is poisoned, so
the farm restarts from the newest checkpoint written while the loss was still finite,
with safer settings. Bad input is never retried: only a person can fix a cfg or a label.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from farm.errors import BadInput
from farm.runs.model import Attempt, Outcome, Run
from farm.settings import Settings


def _default(name: str) -> Any:
    """The farm-wide default, documented once in farm.settings."""
    return Settings.__dataclass_fields__[name].default


@dataclass(frozen=True)
class Policy:
    max_divergence_restarts: int = _default("max_divergence_restarts")
    lr_factor: float = _default("lr_factor")
    burn_in_factor: float = _default("burn_in_factor")
    burn_in_min: int = _default("burn_in_min")
    loss_bound: float = _default("loss_bound")
    crash_restarts: int = _default("crash_restarts")
    stall_restarts: int = _default("stall_restarts")
    stall_timeout: float = _default("stall_timeout")
    #: restarts after a lost worker (those are not the run's fault, but a loop must end)
    lost_restarts: int = 10

    @classmethod
    def from_settings(cls, settings: Settings, overrides: Mapping[str, str] | None = None
                      ) -> "Policy":
        values = {f.name: getattr(settings, f.name) for f in fields(cls)
                  if hasattr(settings, f.name)}
        for key, raw in (overrides or {}).items():
            field = next((f for f in fields(cls) if f.name == key), None)
            if field is None:
                raise BadInput(f"unknown policy key {key!r}",
                               hint="known keys: " + ", ".join(f.name for f in fields(cls)))
            kind = int if field.type == "int" else float
            try:
                values[key] = kind(raw)
            except ValueError:
                raise BadInput(f"policy {key}={raw!r} is not a number") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Restart:
    """The next attempt: from which weights, with which [net] changes, and why."""

    weights: str | None
    changes: dict[str, list[str]]  # key -> [before, after]
    reason: str


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _count(run: Run, outcome: Outcome) -> int:
    return sum(1 for a in run.attempts if a.outcome is outcome)


def resume_weights(run: Run) -> str | None:
    """The newest checkpoint written while the loss was finite, else the start weights."""
    return run.good_checkpoint or run.weights


def next_attempt(run: Run, last: Attempt, policy: Policy) -> Restart | None:
    """The restart the policy allows after `last`, or None when the run must end."""
    outcome = last.outcome
    weights = resume_weights(run)
    if outcome is Outcome.DIVERGED:
        if _count(run, Outcome.DIVERGED) > policy.max_divergence_restarts:
            return None
        lr = float(last.hyper["learning_rate"])
        burn_in = int(float(last.hyper.get("burn_in", "0")))
        new_lr = lr * policy.lr_factor
        new_burn = max(int(burn_in * policy.burn_in_factor), policy.burn_in_min)
        changes = {"learning_rate": [_fmt(lr), _fmt(new_lr)],
                   "burn_in": [str(burn_in), str(new_burn)]}
        where = f"checkpoint at iteration {_iteration_of(run, weights)}" if run.good_checkpoint \
            else ("the start weights" if weights else "scratch")
        return Restart(weights, changes,
                       f"attempt {last.number} diverged at iteration "
                       f"{last.first_bad_iteration}; restarting from {where} with "
                       f"learning_rate {_fmt(lr)} -> {_fmt(new_lr)}, burn_in {burn_in} -> {new_burn}")
    limits = {Outcome.CRASHED: policy.crash_restarts, Outcome.STALLED: policy.stall_restarts,
              Outcome.LOST: policy.lost_restarts}
    if outcome in limits:
        if _count(run, outcome) > limits[outcome]:
            return None
        return Restart(weights, {}, f"attempt {last.number} {outcome.value} "
                                    f"({last.message or 'no message'}); restarting with the "
                                    f"same settings")
    return None


def _iteration_of(run: Run, path: str | None) -> int | None:
    return next((c.iteration for c in run.checkpoints if c.path == path), None)
