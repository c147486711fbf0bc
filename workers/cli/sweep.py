"""`farm sweep submit|show|list|cancel|export|report`: many trials from one spec, ranked.

The spec format is documented in farm/sweeps/spec/__init__.py (and `farm sweep submit --help`).
"""
from __future__ import annotations

import dataclasses
import json
import time
import threading

import click

from farm.errors import BadInput
from farm.queues import TRAIN_DEFAULT
from farm.runs.effective import trained_note
from farm.sweeps import controller as ctl
from farm.sweeps.model import SweepState
from workers.cli import EXIT_FAILED, EXIT_OK, Context, pass_ctx, refusing, warn_findings


@click.group()
def sweep() -> None:
    """Sweeps: queue many trials in the evening, read the leaderboard in the morning."""


@sweep.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the sweep to its end and print the "
                                           "leaderboard; exit 0 if a trial completed.")
@pass_ctx
def submit(ctx: Context, spec_path: str, wait: bool) -> int:
    """Check SPEC (a sweep YAML), plan its trials and start the first ones.

    \b
    Example SPEC:
      base: {data: ds/obj.data, cfg: yolov4-tiny-custom.cfg}
      parameters:
        learning_rate: [0.001, 0.002, 0.004]
        width/height: [320, 416]
      concurrency: 2
      budget: {iterations: 2000}
      objective: map50            # or min_avg_loss where no mAP exists, or
                                  # screens_map50 with eval: {screens: shots/}
      early_stopping: {zero_map_after: 1000, median: {grace: 500}}

    \b
    A dataset recipe instead of base.data (built once per distinct recipe):
      base:
        recipe:
          synth: {n: 3000, seed: 1, canvas: [416, 416], mark_px: [24, 48]}
          package: {valid_ratio: 0.2, network: [416, 416]}
        cfg: yolov4-tiny-custom.cfg
      parameters:
        synth.blur: [0.0, 0.3]    # any synthesis setting; package.* too

    Prints the sweep id. Every error names the spec's file and line.
    """
    sweep_id = start_sweep(ctx, spec_path)
    click.echo(sweep_id)
    return follow(ctx, sweep_id) if wait else EXIT_OK


def _screens_checked(ctx: Context, spec):
    """The spec, its `eval: {screens: HOST:/path}` checked on that host (or made a local
    path when HOST is this one): refused now, not at every evaluation of the night."""
    if spec.eval_screens is None or spec.eval_screens.startswith("/"):
        return spec  # a local one: the spec's parser checked it
    from farm.remote import flow
    host, path = flow.remote_location(ctx.settings, spec.eval_screens)
    if host is None:
        host = spec.eval_screens.partition(":")[0]
        raise BadInput(f"eval.screens: {host} is not a host of the inventory",
                       path=spec.path, hint="name a host of `farm hosts list`, or give a "
                                            "path on this machine")
    if host == ctx.settings.host_name:
        from farm.datasets.screens import open_screens
        return dataclasses.replace(spec, eval_screens=open_screens(path).obj_data)
    return dataclasses.replace(
        spec, eval_screens=flow.check_remote_screens(ctx.settings, host, path))


def start_sweep(ctx: Context, spec_path: str) -> str:
    """Check the spec, record the sweep and start its first trials; its id. (`farm sweep
    submit`, and `farm acceptance` with the spec it writes.)"""
    # the workers answer a broadcast within a second: ask first, check the spec meanwhile
    asked = _Broadcast(ctx)
    from farm.sweeps.service import advance, submit_sweep
    from farm.sweeps.spec import load_spec
    from workers.tasks.enqueue import enqueue_recipe_build, enqueue_train
    spec = _screens_checked(ctx, load_spec(spec_path))
    store = ctx.store()
    store.ping()  # a clear message if Redis is down, before Celery's retries
    warnings = []
    sw = refusing(lambda: submit_sweep(store, ctx.settings, spec,
                                       gpu_workers=lambda: asked.consumers(spec.queue or TRAIN_DEFAULT),
                                       warn=warnings.append))
    warn_findings(warnings)
    for warning in sw.warnings:
        click.echo(f"farm: warning: {warning}", err=True)
    tick = advance(store, ctx.settings, sw.id, enqueue=enqueue_train, early_stop=False,
                   build=enqueue_recipe_build)
    if tick.ended:  # no trial could even be submitted
        from workers.tasks.notify import sweep_ended
        sweep_ended(sw.id)
    return sw.id


class _Broadcast(threading.Thread):
    """The workers' queues, asked on a thread of its own (a daemon: a refused spec does
    not wait for the answer)."""

    def __init__(self, ctx: Context):
        super().__init__(daemon=True, name="ask-workers")
        self.ctx, self.replies = ctx, {}
        self.start()

    def run(self) -> None:
        from workers.presence import active_queues
        self.replies = active_queues(self.ctx.celery(), self.ctx.store(), 1.0)

    def consumers(self, queue: str) -> int:
        """How many workers consume `queue` now (0 when none answered)."""
        self.join()
        return sum(any(q.get("name") == queue for q in queues or ())
                   for queues in self.replies.values())


def follow(ctx: Context, sweep_id: str, poll: float = 1.0) -> int:
    """Show trials as they start and end, their evaluations as they land, and a live line
    (each running trial's progress, the sweep's ETA) until the sweep ends; the sweep
    ends once its trials' last evaluations are recorded. Then the leaderboard."""
    from farm.sweeps.service import leaderboard_of
    from workers.cli import live
    store = ctx.store()
    out = live.LiveOutput()
    trial_of: dict[str, int] = {}
    printer = live.EvaluationPrinter(out, prefix=lambda run_id: f"trial {trial_of[run_id]}: ")
    seen: dict[int, str] = {}
    followed: set[int] = set()  # trials not over when first seen: their evaluations print
    try:
        while True:
            sw, spec, rows = leaderboard_of(store, sweep_id)
            for row in sorted(rows, key=lambda r: r.trial):
                if row.run_id:
                    trial_of[row.run_id] = row.trial
                if row.trial not in seen and row.state not in _OVER:
                    followed.add(row.trial)
                if seen.get(row.trial) != row.state:
                    seen[row.trial] = row.state
                    note = f": {row.note}" if row.note and row.state != "queued" else ""
                    out.event(f"trial {row.trial} {row.state} ({ctl.describe(row.params)})"
                              f"{note}")
            for row in rows:
                if row.trial in followed and row.run_id:
                    printer.show(row.run_id, store.evaluations.all(row.run_id))
            if sw.state is not SweepState.RUNNING:
                break
            out.progress(_sweep_line(store, spec, rows))
            time.sleep(poll)
    finally:
        out.close()
    _print_board(sw, spec, rows)
    done = sw.state is SweepState.DONE and any(r.state == "completed" for r in rows)
    return EXIT_OK if done else EXIT_FAILED


_OVER = ("completed", "failed", "stopped", "cancelled")


def _sweep_line(store, spec, rows: list[ctl.Row]) -> str:
    """sweep 1/4 done, 2 running, 1 waiting, ETA 3m10s | #1 340/600 13 it/s ETA 20s ..."""
    from farm.runs.progress import format_duration, short, sweep_eta
    from workers.cli.live import run_progress
    done = [r for r in rows if r.state in _OVER]
    running = [r for r in rows if r.state in ("running", "stopping") and r.run_id]
    waiting = len(rows) - len(done) - len(running)
    progress = {r.trial: run_progress(store, store.runs.load(r.run_id)) for r in running}
    lengths = [r.wall_time for r in done if r.state == "completed" and r.wall_time]
    lengths = lengths or [r.wall_time + p.eta for r in running
                          if r.wall_time and (p := progress[r.trial]).eta is not None]
    eta = sweep_eta([p.eta for p in progress.values()], waiting, spec.concurrency,
                    sum(lengths) / len(lengths) if lengths else None)
    head = (f"sweep {len(done)}/{len(rows)} done, {len(running)} running, {waiting} waiting, "
            f"ETA {format_duration(eta)}")
    return " | ".join([head] + [f"#{t} {short(p)}" for t, p in sorted(progress.items())])


@sweep.command()
@click.argument("sweep_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True,
              help="The sweep and its whole leaderboard as JSON.")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1),
              help="Rows of the leaderboard to print, best first.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(1),
              help="Which page of --limit rows to print.")
@click.option("--all", "show_all", is_flag=True, help="Print every trial.")
@pass_ctx
def show(ctx: Context, sweep_id: str, as_json: bool, limit: int, page: int,
         show_all: bool) -> None:
    """The leaderboard: trials by state, then the best trials with their state, best
    objective, iterations, restarts and wall time (and, for a recipe sweep, the dataset
    each trial trains on). A big sweep prints one page: --page, --limit, --all."""
    from farm.sweeps.service import leaderboard_of, standings
    if as_json or show_all:
        sw, spec, rows = leaderboard_of(ctx.store(), sweep_id)
        if as_json:
            click.echo(json.dumps({"sweep": sw.to_dict(), "objective": spec.objective,
                                   "goal": spec.goal, "total": len(rows),
                                   "counts": _counts(rows),
                                   "leaderboard": [r.to_dict() for r in rows]}, indent=2))
        else:
            _print_board(sw, spec, rows)
        return
    st = standings(ctx.store(), sweep_id, page, limit)
    _print_board(st.sweep, st.spec, st.rows, counts=st.counts, total=st.total)
    first = (page - 1) * limit
    if st.total > first + len(st.rows) or page > 1:
        click.echo(f"  rows {first + 1}-{first + len(st.rows)} of {st.total}"
                   + (f"; `farm sweep show {st.sweep.id} --page {page + 1}` for more"
                      if page < st.pages else "") + ", --all for every trial")


def _counts(rows: list[ctl.Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def _print_board(sw, spec, rows: list[ctl.Row], *, counts: dict[str, int] | None = None,
                 total: int | None = None) -> None:
    """`counts`/`total`: of the whole sweep when `rows` is one page of it."""
    counts = _counts(rows) if counts is None else counts
    label = ctl.objective_label(spec.objective).upper()
    better = "higher" if spec.goal == "max" else "lower"
    click.echo(f"sweep {sw.id} ({sw.name}): {sw.state.value}"
               + (f" - {sw.message}" if sw.message else ""))
    click.echo(f"  {len(rows) if total is None else total} trials, concurrency "
               f"{spec.concurrency}, objective {spec.objective} ({better} is better)")
    click.echo("  " + ", ".join(f"{n} {state}" for state, n in
                                sorted(counts.items(), key=lambda kv: _STATE_ORDER.get(kv[0], 99))))
    for warning in sw.warnings:
        click.echo(f"  warning: {warning}")
    recipes = spec.recipe is not None  # then each trial's dataset id is a column
    side = spec.eval_screens is not None  # tile mAP and screens mAP side by side
    click.echo(f"{'RANK':>4} {'TRIAL':>5} {'RUN':<16} {'STATE':<10} {label:>10} {'AT':>6} "
               + (f"{'TILE MAP':>9} {'SCREENS':>9} " if side else "")
               + f"{'ITER':>6} {'RESTARTS':>10} {'WALL':>7}  "
               + (f"{'DATASET':<16}  " if recipes else "") + "PARAMS")
    for r in rows:
        at = "-" if r.best_iteration is None else str(r.best_iteration)
        restarts = f"{r.restarts}" + (f" ({r.divergences} nan)" if r.divergences else "")
        maps = (f"{ctl.format_value('map50', r.tile_map):>9} "
                f"{ctl.format_value('map50', r.screens_map):>9} ") if side else ""
        click.echo(f"{r.rank or '-':>4} {r.trial:>5} {r.run_id or '-':<16} {r.state:<10} "
                   f"{ctl.format_value(spec.objective, r.best):>10} {at:>6} {maps}"
                   f"{r.iterations:>6} {restarts:>10} {_duration(r.wall_time):>7}  "
                   + (f"{r.dataset or '-':<16}  " if recipes else "")
                   + ctl.describe(r.params) + _trained(r))
        if r.note and r.state in ("stopped", "stopping", "failed"):
            click.echo(f"{'':>12}why: {r.note}")
        elif r.note and r.state == "building":
            click.echo(f"{'':>12}{r.note}")


def _trained(row: ctl.Row) -> str:
    """What its best weights were really trained with, where a restart changed it."""
    note = trained_note(row.settings)
    return f"  {note}" if note else ""


#: the order states are counted in: the work in hand first
_STATE_ORDER = {s: k for k, s in enumerate(("running", "stopping", "queued", "building",
                                            "pending", "completed", "stopped", "failed",
                                            "cancelled"))}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


@sweep.command("list")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
def list_cmd(ctx: Context, limit: int) -> None:
    """Sweeps, newest first."""
    sweeps = ctx.store().sweeps.recent(limit)
    if not sweeps:
        click.echo("no sweeps yet: `farm sweep submit SPEC` starts one")
        return
    for sw in sweeps:
        click.echo(f"{sw.id:<16} {sw.state.value:<10} {sw.name:<20} {sw.message}")


@sweep.command()
@click.argument("sweep_id", metavar="ID")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to wait for running trials to stop.")
@pass_ctx
def cancel(ctx: Context, sweep_id: str, timeout: float) -> int:
    """Cancel a sweep: running trials are stopped, the rest marked cancelled."""
    from farm.sweeps.service import cancel_sweep
    store = ctx.store()
    sw = store.sweeps.find(sweep_id)
    if sw.state is not SweepState.RUNNING:
        click.echo(f"{sw.id} already {sw.state.value}")
        return EXIT_OK
    asked = cancel_sweep(store, sw.id)
    ctx.celery()  # the notification goes to a cpu worker (farm.notify)
    from workers.tasks.notify import sweep_ended
    sweep_ended(sw.id)
    deadline = time.monotonic() + timeout
    pending = list(asked)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not store.runs.load(r).state.finished]
        time.sleep(0.2)
    if pending:
        click.echo(f"{sw.id}: cancel requested; {len(pending)} run(s) not stopped within "
                   f"{timeout:g} s: {', '.join(pending)} (`farm status RUN`)", err=True)
        return EXIT_FAILED
    click.echo(f"{sw.id} cancelled ({len(asked)} running trial(s) stopped)")
    return EXIT_OK


@sweep.command()
@click.argument("sweep_id", metavar="ID")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the bundle into.")
@click.option("--trial", type=int, help="Export this trial instead of the best one.")
@pass_ctx
def export(ctx: Context, sweep_id: str, out_dir: str, trial: int | None) -> None:
    """Write the best trial as a darknet bundle: best.cfg, best.weights, obj.names,
    obj.data (relative paths), result.json (objective, mAP) and the chart if any."""
    from farm.sweeps.export import export_best
    from workers.cli import pull_from_host
    out = export_best(ctx.store(), sweep_id, out_dir, trial, here=ctx.settings.host_name,
                      fetch=lambda host, path, dest: pull_from_host(ctx, host, path, dest))
    result = json.loads((out / "result.json").read_text())
    click.echo(f"trial {result['trial']} ({result['run_id']}) -> {out}")



@sweep.command()
@click.argument("sweep_id", metavar="ID")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write.")
@pass_ctx
def report(ctx: Context, sweep_id: str, out_path: str) -> None:
    """Write the sweep's morning report: one HTML file that opens anywhere, offline
    (leaderboard with the settings each trial trained with, every trial's curves
    overlaid, each trial's lineage and chart, failures with reasons, wall and GPU time)."""
    from farm.sweeps.report import gather
    from farm.sweeps.reporthtml import write
    rep = gather(ctx.store(), sweep_id)
    out = write(rep, out_path)
    click.echo(f"{rep.sweep.id} ({rep.sweep.state.value}, {len(rep.trials)} trials) -> {out}")
