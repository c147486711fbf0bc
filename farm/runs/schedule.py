"""darknet's learning-rate schedule, and how a restarted attempt warms up again.

darknet computes the rate from the iteration counter the weights carry
(`get_current_batch` = seen / batch): while that counter is below `burn_in` the rate is
`learning_rate * (iteration / burn_in) ^ power`, counted from iteration 0, and after it the
policy's rate (pjreddie src/network.c get_current_rate, the one we run; AlexeyAB
network.c:136 per docs/darknet.md §6; hank-ai src-lib/network.cpp get_current_rate, the
same code). A resumed attempt keeps the counter (darknet.md §4), so doubling burn_in after a
divergence made a short run train inside the warm-up and never reach its rate, and a late
resume with burn_in below the resume point got no warm-up at all.

How the farm re-warms, and why this way: iterations stay absolute (the checkpoints, the
metrics, the evaluations and darknet's own `_N` file names keep one count), `burn_in` is
set to the iteration where the re-warm must end, and `power` is raised just enough that
darknet's rate on the first iteration after the resume is `rewarm_start` x the target
(the ramp is then close to a log-linear climb over the window). Steps already passed by
the end of the re-warm are folded into `learning_rate` and dropped, because during
burn-in darknet ramps to the *unstepped* learning_rate: without the fold the ramp would
climb to a rate the schedule left long ago and then fall. The other way, `-clear` with
max_batches and steps shifted by the resume iteration, would make every weights file
count from the resume, so each later resume (a crash, a lost worker) would need the
offset too, and darknet's log and files would disagree with the farm's iterations.

The price: `power` also drives policy=poly and random, and exp/step/sig/sgdr rates depend on
the iteration after burn-in; the farm re-warms only `steps` and `constant` schedules and
refuses the restart of others (when it must change burn_in or power) with a message.
AlexeyAB builds with CUDNN_HALF keep Tensor Cores off until 3 x burn_in (detector.c).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: Schedules the farm can re-warm (see the module docstring).
REWARMABLE = ("steps", "constant")


class CannotRewarm(Exception):
    """The restart cannot warm up again as the policy demands; the message says why."""


def _ints(text: str | None) -> list[int]:
    return [int(float(x)) for x in (text or "").split(",") if x.strip()]


def _floats(text: str | None) -> list[float]:
    return [float(x) for x in (text or "").split(",") if x.strip()]


def fmt(x: float) -> str:
    return f"{x:.6g}"


def darknet_rate(hyper: dict[str, str], iteration: int) -> float:
    """The rate darknet prints at `iteration` for a steps or constant schedule."""
    lr = float(hyper.get("learning_rate", "0.001"))
    burn_in = int(float(hyper.get("burn_in", "0") or 0))
    if iteration < burn_in:
        return lr * math.pow(iteration / burn_in, float(hyper.get("power", "4")))
    return lr * _passed_scale(hyper, iteration)


def _passed_scale(hyper: dict[str, str], iteration: int) -> float:
    """The product of the scales of the steps darknet has applied at `iteration`."""
    if hyper.get("policy", "constant") != "steps":
        return 1.0
    scale = 1.0
    for step, s in zip(_ints(hyper.get("steps")), _floats(hyper.get("scales"))):
        if step > iteration:
            break
        scale *= s
    return scale


def window(max_batches: int, minimum: int, fraction: float) -> int:
    """Iterations a restart may take to reach its rate: max(minimum, fraction x budget)."""
    return max(minimum, math.ceil(fraction * max_batches))


@dataclass(frozen=True)
class Rewarm:
    """The [net] values of an attempt that resumes at `resume` and trains at `rate`."""

    hyper: dict[str, str]  # learning_rate (folded), burn_in, power, policy, steps, scales
    rate: float            # the rate it ramps to (learning_rate as the cfg means it)
    end: int               # the iteration where darknet's rate reaches it


def rewarm(requested: dict[str, str], rate: float, resume: int, max_batches: int, *,
           window_size: int, start: float) -> Rewarm:
    """The schedule of a restarted attempt: from `resume`, darknet's rate climbs from at most
    `start` x its target to the target, which it reaches within `window_size` iterations and
    before half of the remaining budget is used (a cfg's own burn_in that ends later is
    kept: the first attempt trained with it). `requested` is the run's own schedule; `rate`
    the learning_rate the policy wants (before steps). Raises CannotRewarm."""
    policy = requested.get("policy", "constant")
    remaining = max_batches - resume
    size = min(window_size, remaining // 2)
    if size < 2:
        raise CannotRewarm(
            f"{remaining} iteration(s) remain after iteration {resume} of {max_batches}: too "
            f"few to warm up again (the re-warm takes at least 2 and at most half of what "
            f"remains)")
    own_burn_in = int(float(requested.get("burn_in", "0") or 0))
    end = max(resume + size, own_burn_in)
    power = float(requested.get("power", "4"))
    needed = math.log(1 / start) / math.log(end / (resume + 1))
    new_power = power if needed <= power else _round_up(needed)
    out = dict(requested)
    if policy not in REWARMABLE:
        if end != own_burn_in or new_power != power:
            raise CannotRewarm(
                f"policy={policy}: the farm re-warms only steps and constant schedules "
                f"(power also shapes {policy}, or its rate depends on the iteration), and "
                f"this restart at iteration {resume} would need burn_in {end}")
        out["learning_rate"] = fmt(rate)
        return Rewarm(out, rate, end)
    folded = rate * _passed_scale(requested, end)
    if policy == "steps":
        pairs = [(s, c) for s, c in zip(_ints(requested.get("steps")),
                                        _floats(requested.get("scales"))) if s > end]
        if pairs:
            out["steps"] = ",".join(str(s) for s, _ in pairs)
            out["scales"] = ",".join(fmt(c) for _, c in pairs)
        else:  # every step passed: the rest of the run is constant
            out["policy"] = "constant"
    out.update(learning_rate=fmt(folded), burn_in=str(end), power=fmt(new_power))
    # the values as written must keep the promise (6 significant digits round)
    first = darknet_rate(out, resume + 1) if resume + 1 < end else folded
    if first > start * folded * (1 + 1e-9):
        raise CannotRewarm(f"rounding: the first rate {first:g} is above {start:g} x "
                           f"{folded:g}")  # pragma: no cover - _round_up prevents it
    return Rewarm(out, rate, end)


def _round_up(x: float) -> float:
    """`x` rounded up at its 6th significant digit (what fmt writes)."""
    digits = 5 - math.floor(math.log10(x))
    return math.ceil(x * 10 ** digits) / 10 ** digits


def fit_steps(base_max_batches: int | None, base_steps: list[int], policy: str | None,
              overrides: dict[str, str]) -> str | None:
    """`steps` scaled to a changed max_batches (None when nothing is to change): the
    learning-rate drops keep their place in the schedule, and darknet never sees a step
    beyond max_batches. Used by a sweep's budget.iterations and by `--set max_batches`."""
    new = int(overrides.get("max_batches", 0) or 0)
    old = base_max_batches or 0
    if not new or not old or new == old or "steps" in overrides:
        return None
    if (overrides.get("policy") or policy) != "steps" or not base_steps:
        return None
    return ",".join(str(max(1, s * new // old)) for s in base_steps)
