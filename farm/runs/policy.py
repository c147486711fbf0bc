"""What to do after an attempt ends: the divergence, memory and crash policy, as a pure
function.

No darknet fork stops on nan, and after nan every weights file it writes is poisoned, so
the farm restarts from the newest checkpoint written while the loss was still finite, at
a lower rate that it warms up to again (farm.runs.schedule). Out of memory gets darknet
users' own remedies, one per restart. Crashes and stalls are retried while the run makes
progress between them. Bad input is never retried: only a person can fix a cfg or a label.
No space is not the run's fault: it resumes as it was once the disk has room again.
When the policy cannot restart the run as it promises, it says why (GiveUp).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from farm.errors import BadInput
from farm.runs import schedule
from farm.runs.effective import requested_of, same_value
from farm.runs.model import Attempt, Outcome, Run
from farm.settings import Settings


def _default(name: str) -> Any:
    """The farm-wide default, documented once in farm.settings."""
    return Settings.__dataclass_fields__[name].default


@dataclass(frozen=True)
class Policy:
    max_divergence_restarts: int = _default("max_divergence_restarts")
    lr_factor: float = _default("lr_factor")
    burn_in_min: int = _default("burn_in_min")
    rewarm_fraction: float = _default("rewarm_fraction")
    rewarm_start: float = _default("rewarm_start")
    loss_bound: float = _default("loss_bound")
    crash_restarts: int = _default("crash_restarts")
    stall_restarts: int = _default("stall_restarts")
    restart_progress: int = _default("restart_progress")
    stall_timeout: float = _default("stall_timeout")
    oom_restarts: int = _default("oom_restarts")
    oom_subdivisions: int = _default("oom_subdivisions")
    oom_random: int = _default("oom_random")
    oom_size_step: int = _default("oom_size_step")
    oom_min_size: int = _default("oom_min_size")
    lost_restarts: int = _default("lost_restarts")

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
        policy = cls(**values)
        policy.check()
        return policy

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        """A run's recorded policy; keys of older farms (burn_in_factor) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def check(self) -> None:
        if not 0 < self.lr_factor < 1:
            raise BadInput(f"policy lr_factor={self.lr_factor:g} must be between 0 and 1")
        if not 0 < self.rewarm_start <= 0.1:
            raise BadInput(f"policy rewarm_start={self.rewarm_start:g} must be in (0, 0.1]",
                           hint="the first rate after a restart is at most a tenth of "
                                "the rate it warms up to")
        if self.rewarm_fraction < 0 or self.burn_in_min < 0 or self.restart_progress < 0:
            raise BadInput("policy burn_in_min, rewarm_fraction and restart_progress must "
                           "not be negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Restart:
    """The next attempt: from which weights, with which settings, and why."""

    weights: str | None
    changes: dict[str, list[str]]  # key -> [before, after]
    reason: str
    hyper: dict[str, str] | None = None  # every managed value (None: the run's own)
    rate: float | None = None            # the rate it trains at (learning_rate before steps)


@dataclass(frozen=True)
class GiveUp:
    """The run ends: `reason` says why no restart is allowed."""

    reason: str


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def resume_point(run: Run) -> tuple[str | None, int]:
    """The newest checkpoint written while the loss was finite (else the start weights)
    and the iteration darknet resumes at from it."""
    if run.good_checkpoint:
        it = next((c.iteration for c in run.checkpoints if c.path == run.good_checkpoint), 0)
        return run.good_checkpoint, it
    return run.weights, run.weights_iteration if run.weights else 0


def resume_weights(run: Run) -> str | None:
    return resume_point(run)[0]


def next_attempt(run: Run, last: Attempt, policy: Policy) -> Restart | GiveUp:
    """The restart the policy allows after `last`, or why the run must end."""
    outcome = last.outcome
    if outcome is Outcome.DIVERGED:
        return _after_divergence(run, last, policy)
    if outcome is Outcome.OUT_OF_MEMORY:
        return _after_oom(run, last, policy)
    weights, it = resume_point(run)
    if outcome in (Outcome.CRASHED, Outcome.STALLED):
        limit = policy.crash_restarts if outcome is Outcome.CRASHED else policy.stall_restarts
        streak = in_a_row(run, outcome, policy.restart_progress)
        if streak > limit:
            return GiveUp(f"{streak} attempts {outcome.value} in a row without "
                          f"{policy.restart_progress} iterations of progress between them "
                          f"({outcome.value.replace('ed', '')}_restarts {limit}); the last: "
                          f"{last.message or 'no message'}")
    elif outcome is Outcome.NO_SPACE:
        pass  # not the run's fault: it waits for space (farm.runs.service), then resumes
    elif outcome is Outcome.LOST:
        lost = sum(1 for a in run.attempts if a.outcome is Outcome.LOST)
        if lost > policy.lost_restarts:
            return GiveUp(f"{lost} attempts lost their worker (lost_restarts "
                          f"{policy.lost_restarts})")
    else:
        return GiveUp(f"attempt {last.number} {outcome.value if outcome else 'unfinished'}: "
                      f"not retried")
    return Restart(weights, {}, f"attempt {last.number} {outcome.value} "
                                f"({last.message or 'no message'}); restarting from "
                                f"{_where(run, weights, it)} with the same settings",
                   hyper=dict(last.hyper), rate=last.rate_value)


def in_a_row(run: Run, outcome: Outcome, progress: int) -> int:
    """Attempts that ended with `outcome` since the last attempt that made `progress`
    iterations (its newest finite checkpoint past where it started), that one included."""
    count = 0
    for a in reversed(run.attempts):
        count += a.outcome is outcome
        best = max((c.iteration for c in run.checkpoints
                    if c.finite and c.attempt == a.number), default=None)
        if best is not None and best - a.start_iteration >= max(progress, 1):
            break
    return count


def _after_divergence(run: Run, last: Attempt, policy: Policy) -> Restart | GiveUp:
    diverged = sum(1 for a in run.attempts if a.outcome is Outcome.DIVERGED)
    head = f"attempt {last.number} diverged at iteration {last.first_bad_iteration}"
    if diverged > policy.max_divergence_restarts:
        return GiveUp(f"{head}: {diverged} divergences, max_divergence_restarts "
                      f"{policy.max_divergence_restarts} used")
    weights, resume = resume_point(run)
    rate = last.rate_value * policy.lr_factor
    size = schedule.window(run.max_batches, policy.burn_in_min, policy.rewarm_fraction)
    try:
        warm = schedule.rewarm(requested_of(run), rate, resume, run.max_batches,
                               window_size=size, start=policy.rewarm_start)
    except schedule.CannotRewarm as e:
        return GiveUp(f"{head}; a restart at learning_rate {_fmt(rate)} from "
                      f"{_where(run, weights, resume)} cannot warm up again: {e}")
    hyper = {**last.hyper, **warm.hyper}
    changes = {k: [last.hyper.get(k, ""), v] for k, v in hyper.items()
               if not same_value(last.hyper.get(k), v)}
    changes["learning_rate"] = [_fmt(last.rate_value), _fmt(rate)]  # as the cfg means it
    return Restart(weights, changes,
                   f"{head}; restarting from {_where(run, weights, resume)} at learning_rate "
                   f"{_fmt(last.rate_value)} -> {_fmt(rate)}, warming up again from "
                   f"iteration {resume} to {warm.end}", hyper=hyper, rate=rate)


def _after_oom(run: Run, last: Attempt, policy: Policy) -> Restart | GiveUp:
    head = f"attempt {last.number} ran out of memory ({last.message or 'no message'})"
    count = sum(1 for a in run.attempts if a.outcome is Outcome.OUT_OF_MEMORY)
    if count > policy.oom_restarts:
        return GiveUp(f"{head}: {count} times, oom_restarts {policy.oom_restarts} used")
    change = oom_remedy(last.hyper, policy)
    if change is None:
        return GiveUp(f"{head}, and the policy has no remedy left (subdivisions at batch, "
                      f"random=0, width/height at oom_min_size {policy.oom_min_size} or "
                      f"those remedies turned off)")
    hyper = {**last.hyper, **{k: after for k, (_, after) in change.items()}}
    weights, it = resume_point(run)
    what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in change.items())
    return Restart(weights, {k: list(v) for k, v in change.items()},
                   f"{head}; restarting from {_where(run, weights, it)} with {what}",
                   hyper=hyper, rate=last.rate_value)


def oom_remedy(hyper: dict[str, str], policy: Policy) -> dict[str, tuple[str, str]] | None:
    """darknet users' remedy for the next attempt, in their order: double subdivisions (to
    a divisor of batch, at most batch), then random=0, then a network smaller by
    oom_size_step pixels (multiples of 32); None when none is left."""
    batch = int(hyper.get("batch", "1") or 1)
    sub = int(hyper.get("subdivisions", "1") or 1)
    if policy.oom_subdivisions and sub < batch:
        new = next(d for d in range(min(2 * sub, batch), batch + 1) if batch % d == 0)
        return {"subdivisions": (str(sub), str(new))}
    if policy.oom_random and hyper.get("random", "0") not in ("0", ""):
        return {"random": (hyper["random"], "0")}
    if policy.oom_size_step > 0:
        out = {}
        for key in ("width", "height"):
            size = int(hyper.get(key, "0") or 0)
            new = (size - policy.oom_size_step) // 32 * 32
            if size and new >= policy.oom_min_size:
                out[key] = (str(size), str(new))
        if len(out) == 2:
            return out
    return None


def _where(run: Run, weights: str | None, iteration: int) -> str:
    if weights and weights == run.good_checkpoint:
        return f"the checkpoint at iteration {iteration}"
    return f"the start weights (iteration {iteration})" if weights else "scratch"
