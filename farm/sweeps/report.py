"""The morning report of a sweep, as data: what `farm sweep report` writes out.

What a person wants after a night of training: the leaderboard (with the settings each
trial really trained with), all trials' curves overlaid, each trial's lineage (attempts,
outcomes, what changed and why), failures with their reasons, the wall time and the GPU
hours. `gather` reads it from the farm's records; farm.sweeps.reporthtml turns it into
one self-contained HTML file.

GPU time is the sum of the durations of every training attempt of the sweep's runs
(darknet's start to its end; one still running, up to now). `farm.train` runs only on
workers of the `gpu` queue (or a GPU host's own queue), one per GPU, so each attempt held
one GPU for that long, restarts and lost attempts included. Evaluations (the `eval`
queue) and dataset builds are not in it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from farm.eval.evaluation import Evaluation
from farm.plot import axes, overlay, runchart
from farm.runs.effective import effective_settings
from farm.runs.model import Attempt, Run
from farm.store import Store
from farm.sweeps import controller as ctl
from farm.sweeps.model import Sweep
from farm.sweeps.progress import map50_points, screens_map50_points
from farm.sweeps.service import leaderboard_of
from farm.sweeps.spec import SweepSpec

#: trials overlaid at most (the best first): beyond that the lines are a blur
OVERLAID = 50
#: trials whose own chart (every attempt, its restarts) is drawn in the report at most;
#: restarted and failed trials first, then the best: about 40 kB of SVG each
CHARTS = 40
#: the overlay's size in the report, in pixels
OVERLAY_SIZE = (1000, 640)
#: how the GPU time is counted, as the report says it
GPU_TIME_RULE = ("the sum of every training attempt's duration (darknet's start to its "
                 "end; a running one up to now), restarts and lost attempts included: "
                 "farm.train runs only on gpu-queue workers, one per GPU, so each attempt "
                 "held one GPU that long. Evaluations (eval queue) and dataset builds are "
                 "not counted.")


@dataclass
class AttemptLine:
    """One attempt as the lineage shows it."""

    number: int
    host: str
    started_at: float
    seconds: float            # how long it ran (to now when it still runs)
    running: bool
    start_iteration: int
    last_iteration: int | None
    outcome: str              # completed | diverged | … | running
    reason: str               # why it was started (the first attempt, or the restart's why)
    changes: dict[str, list[str]]   # key -> [before, after]
    hyper: dict[str, str]     # what it trained with
    message: str              # what ended it
    first_bad_iteration: int | None = None


@dataclass
class TrialReport:
    row: ctl.Row
    run_id: str | None
    max_batches: int = 0
    attempts: list[AttemptLine] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    best_map: tuple[float, int] | None = None    # (mAP@0.50, iteration)
    screens_map: float | None = None              # best screens mAP@0.50, where recorded
    trained_with: str = ""                         # requested -> effective, in words
    gpu_seconds: float = 0.0
    colour: str | None = None                     # its colour in the overlay
    chart_svg: str | None = None                  # its own chart (every attempt)


@dataclass
class SweepReport:
    sweep: Sweep
    spec: SweepSpec
    trials: list[TrialReport]           # in leaderboard order
    overlay_svg: str
    overlaid: int                       # trials in the overlay
    generated_at: float
    wall_seconds: float                 # submitted -> closed (or now)
    gpu_seconds: float
    gpu_by_host: dict[str, float]
    counts: dict[str, int]              # trials by state

    @property
    def failures(self) -> list[TrialReport]:
        """Trials that did not complete (failed, stopped, cancelled) and trials with an
        attempt that ended badly, failed ones first."""
        order = {"failed": 0, "stopped": 1, "cancelled": 2}
        bad = [t for t in self.trials if t.row.state in order
               or any(a.outcome not in ("completed", "running") for a in t.attempts)]
        return sorted(bad, key=lambda t: (order.get(t.row.state, 3), t.row.trial))


def gather(store: Store, sweep_id: str, *, now: float | None = None,
           charts: int = CHARTS, overlaid: int = OVERLAID) -> SweepReport:
    """Everything the report shows, read from the farm's records now."""
    now = time.time() if now is None else now
    sweep, spec, rows = leaderboard_of(store, sweep_id, now)
    trials: list[TrialReport] = []
    runs: dict[int, tuple[Run, list[list]]] = {}  # each trial's run, the mAP overlaid
    screens = spec.objective == "screens_map50"  # then the overlay draws what ranks
    for row in rows:
        if not row.run_id:
            trials.append(TrialReport(row=row, run_id=None))
            continue
        run = store.runs.load(row.run_id)
        maps = map50_points(store, run.id)
        trials.append(trial_report(row, run, store.evaluations.all(run.id), maps, now))
        runs[row.trial] = (run, screens_map50_points(store, run.id) if screens else maps)
    with_runs = [t for t in trials if t.row.trial in runs]
    charted = {t.row.trial for t in sorted(with_runs, key=_chart_priority)[:charts]}
    curves: list[overlay.Curve] = []
    for t in with_runs:  # the best first
        if len(curves) >= overlaid and t.row.trial not in charted:
            continue
        run, maps = runs[t.row.trial]
        chart = runchart.for_run(store, run, title=f"trial {t.row.trial} ({run.id})")
        if t.row.trial in charted:
            t.chart_svg = runchart.draw(chart).to_svg()
        if len(curves) < overlaid:
            curve = _curve(t, run, chart, maps)
            if curve.loss or curve.maps:
                curves.append(curve)
    drawing = overlay.build(curves, title=f"{sweep.name or sweep.id}: every trial",
                            max_batches=spec.budget.iterations or 0,
                            map_label=ctl.overlay_map_label(spec.objective))
    for c in drawing.curves:
        next(t for t in trials if t.row.trial == c.key).colour = c.colour
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    by_host: dict[str, float] = {}
    for t in trials:
        for a in t.attempts:
            by_host[a.host] = by_host.get(a.host, 0.0) + a.seconds
    return SweepReport(sweep=sweep, spec=spec, trials=trials,
                       overlay_svg=overlay.draw(drawing, OVERLAY_SIZE).to_svg(),
                       overlaid=len(drawing.curves), generated_at=now,
                       wall_seconds=(sweep.ended_at or now) - sweep.created_at,
                       gpu_seconds=sum(by_host.values()), gpu_by_host=by_host,
                       counts=counts)


def trial_report(row: ctl.Row, run: Run, evaluations: list[Evaluation], maps: list[list],
                 now: float) -> TrialReport:
    """A trial with a run: its lineage, evaluations (`maps`: its mAP@0.50 points, as
    farm.sweeps.progress.map50_points reads them), settings and GPU time."""
    attempts = [_line(a, now) for a in run.attempts]
    best = max(maps, key=lambda p: (p[1], -p[0])) if maps else None
    return TrialReport(row=row, run_id=run.id, max_batches=run.max_batches,
                       attempts=attempts, evaluations=evaluations,
                       best_map=(float(best[1]), int(best[0])) if best else None,
                       screens_map=getattr(row, "screens_map", None),  # screens sets
                       trained_with=trained_with(row, run),
                       gpu_seconds=sum(a.seconds for a in attempts))


def _line(a: Attempt, now: float) -> AttemptLine:
    running = a.outcome is None
    end = now if running else (a.ended_at or a.started_at)
    return AttemptLine(number=a.number, host=a.host, started_at=a.started_at,
                       seconds=max(0.0, end - a.started_at), running=running,
                       start_iteration=a.start_iteration, last_iteration=a.last_iteration,
                       outcome="running" if running else a.outcome.value,
                       reason=a.reason, changes=dict(a.changes or {}),
                       hyper=dict(a.hyper or {}), message=a.message,
                       first_bad_iteration=a.first_bad_iteration)


def trained_with(row: ctl.Row, run: Run) -> str:
    """What the trial's weights were trained with against what was asked, in words, as
    every surface says it (farm.runs.effective): `learning_rate 0.05 -> 0.0125 after 2
    restarts`, or `as requested`. The attempt whose weights stood at the trial's best
    (the leaderboard's choice), else the one that wrote its newest good checkpoint."""
    return (row.settings or effective_settings(run).to_dict())["text"]


def _curve(t: TrialReport, run: Run, chart: runchart.RunChart,
           maps: list[list]) -> overlay.Curve:
    """The trial's avg loss along the lineage that made its weights: each attempt up to
    where the next one resumed, and never past its first nan (the restarts and the
    run-up to nan are in the trial's own chart)."""
    bad = {a.number: a.first_bad_iteration for a in run.attempts}
    loss: list[tuple[int, float]] = []
    series = chart.attempts
    for k, s in enumerate(series):
        stop = series[k + 1].start if k + 1 < len(series) else math.inf
        if bad.get(s.number) is not None:
            stop = min(stop, bad[s.number])
        loss += [(round(x), v) for x, v in s.avg if x <= stop]
    label = f"#{t.row.trial} {ctl.describe(t.row.params)}".strip()
    about = [f"trial {t.row.trial} ({run.id}): {t.row.state}", label]
    if t.trained_with and t.trained_with != "as requested":
        about.append(f"trained with: {t.trained_with}")
    return overlay.Curve(key=t.row.trial, label=label, about="\n".join(about), loss=loss,
                         maps=[(int(i), float(m)) for i, m in maps])


def _chart_priority(t: TrialReport) -> tuple:
    """Restarted and failed trials first (their lineage is the story), then by rank."""
    eventful = len(t.attempts) > 1 or t.row.state == "failed"
    return (not eventful, t.row.rank is None, t.row.rank or 0, t.row.trial)


def fmt_hours(seconds: float) -> str:
    """GPU time as people count it: `0.42 GPU-h (25m10s)`."""
    from farm.runs.progress import format_duration
    return f"{seconds / 3600:.2f} GPU-h ({format_duration(seconds)})"


def trial_colour(t: TrialReport) -> str:
    return t.colour or axes.MUTED
