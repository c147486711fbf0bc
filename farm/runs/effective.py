"""What a run's weights were really trained with, against what was asked.

A restart changes settings: a lower learning rate warmed up to again (with burn_in, power
and steps shaped for it), more subdivisions, random=0 or a smaller network after running
out of memory. Every surface (`farm status`, `farm runs`, the board, the leaderboard,
`sweep export`) shows the result of `effective_settings`, so they cannot disagree:
`learning_rate 5 -> 0.625 after 3 restarts`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from farm.runs.model import Attempt, Run

#: The values a restart may change, in the order they are shown.
MANAGED = ("learning_rate", "batch", "subdivisions", "width", "height", "random", "burn_in",
           "power", "policy", "steps", "scales")


def requested_of(run: Run) -> dict[str, str]:
    """The managed values as the run asked for them (its first attempt's record)."""
    if not run.attempts:
        return {}
    first = run.attempts[0]
    return dict(first.requested or first.hyper)


def attempt_for_weights(run: Run, path: str | None) -> Attempt | None:
    """The attempt that wrote the checkpoint `path` (the farm's copy or darknet's file)."""
    number = next((c.attempt for c in run.checkpoints if path and path in (c.path, c.source)),
                  None)
    return _numbered(run, number)


def attempt_at(run: Run, iteration: int | None) -> Attempt | None:
    """The attempt whose weights stood at `iteration`: the one that wrote the finite
    checkpoint there, else the last one that trained through it."""
    found = pick(lineage(run), iteration)
    return _numbered(run, found["attempt"]) if found else None


def lineage(run: Run) -> list[dict]:
    """Per attempt: its span, its finite checkpoints and its settings, as JSON (what a
    sweep keeps of an ended trial, so the leaderboard needs no run to attribute a best)."""
    return [{"attempt": a.number, "start": a.start_iteration, "last": a.last_iteration,
             "checkpoints": [c.iteration for c in run.checkpoints
                             if c.finite and c.attempt == a.number],
             "settings": effective_settings(run, a).to_dict()} for a in run.attempts]


def pick(spans: list[dict], iteration: int | None) -> dict | None:
    """The lineage entry whose weights stood at `iteration` (see attempt_at); the last
    one when `iteration` is None."""
    if not spans:
        return None
    if iteration is None:
        return spans[-1]
    wrote = [s for s in spans if iteration in s["checkpoints"]]
    if wrote:
        return wrote[-1]
    return next((s for s in reversed(spans) if s["last"] is not None
                 and s["start"] < iteration <= s["last"]), None)


def _numbered(run: Run, number: int | None) -> Attempt | None:
    return next((a for a in run.attempts if a.number == number), None)


@dataclass(frozen=True)
class Effective:
    attempt: int | None          # whose settings these are
    restarts: int                # attempts before it
    requested: dict[str, str]
    effective: dict[str, str]    # learning_rate: the rate as the cfg means it (before steps)
    changed: dict[str, list[str]]  # key -> [requested, effective], in MANAGED order
    text: str                    # `learning_rate 5 -> 0.625 after 3 restarts`

    def to_dict(self) -> dict:
        return asdict(self)


def effective_settings(run: Run, attempt: Attempt | None = None) -> Effective:
    """The settings of `attempt` (default: the one that wrote the run's newest good
    checkpoint, else its last attempt) against the run's request."""
    if attempt is None:
        attempt = attempt_for_weights(run, run.good_checkpoint) or run.current
    requested = requested_of(run)
    if attempt is None:
        return Effective(None, 0, requested, dict(requested), {}, "as requested")
    effective = dict(attempt.hyper)
    if effective or attempt.rate is not None:
        effective["learning_rate"] = _num(attempt.rate_value)
    changed = {k: [requested.get(k, "-"), effective[k]] for k in MANAGED
               if k in effective and not same_value(requested.get(k), effective[k])}
    restarts = attempt.number - 1
    text = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) or "as requested"
    if restarts:
        text += f" after {restarts} restart{'s' if restarts > 1 else ''}"
    return Effective(attempt.number, restarts, requested, effective, changed, text)


def trained_note(settings: dict | None) -> str:
    """`[trained: …]` to write after a trial's asked params where a restart changed what
    its weights were trained with (`settings`: Effective.to_dict(), or its text alone);
    empty when they are as requested."""
    text = (settings or {}).get("text") or ""
    return "" if not text or text.startswith("as requested") else f"[trained: {text}]"


def _num(x: float) -> str:
    return f"{x:.6g}"


def same_value(a: str | None, b: str | None) -> bool:
    """Equal as darknet reads them: numbers by value, lists (`steps`, `scales`) item by
    item (a restart writes `.1,.1` back as `0.1,0.1`: no change)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    xs, ys = a.split(","), b.split(",")
    try:
        return len(xs) == len(ys) and all(float(x) == float(y) for x, y in zip(xs, ys))
    except ValueError:
        return False
