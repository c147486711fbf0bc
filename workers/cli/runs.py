"""`farm train`, `runs`, `status`, `logs`, `cancel`: training runs from the command line."""
from __future__ import annotations

import json
import math
import os
import time
import uuid

import click

from farm.errors import BadInput
from farm.eval.evaluation import Evaluation
from farm.queues import host_queue
from farm.runs.effective import effective_settings
from farm.runs.model import Outcome, Run, RunState
from farm.settings import EVAL_EVERY
from workers.cli import (EXIT_FAILED, EXIT_OK, Context, listeners, pass_ctx, refusing,
                         warn_findings)


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{flag} {item!r} is not key=value",
                           hint=f"for example {flag} learning_rate=0.001")
        out[key.strip()] = value.strip()
    return out


@click.command()
@click.argument("data", metavar="DATA")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", required=False, metavar="[WEIGHTS]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a [net] key of the cfg (repeatable).")
@click.option("--policy", "policy", multiple=True, metavar="KEY=VALUE",
              help="Change the restart policy, e.g. max_divergence_restarts=5 (repeatable).")
@click.option("--eval-every", default=EVAL_EVERY, show_default=True, metavar="N",
              help="Evaluate a finite checkpoint every N iterations (and the final one).")
@click.option("--queue", metavar="QUEUE", help="Queue to train on (default gpu; host.<name> pins a host).")
@click.option("--host", "on_host", metavar="HOST", help="Train on this inventory host (queue host.HOST).")
@click.option("--wait", is_flag=True, help="Follow the run to its end; exit 0 only if it completed.")
@click.option("--eval-screens", "eval_screens", metavar="DATA",
              help="A screens set (`farm dataset package --kind screens`), here or "
                   "HOST:/path: every evaluation also scores it, and the run's best "
                   "weights are the best on it.")
@pass_ctx
def train(ctx: Context, data, cfg, weights, sets, policy, eval_every, queue, on_host,
          wait, eval_screens) -> int:
    """Queue a darknet training run of DATA (obj.data) and CFG, from WEIGHTS if given.

    DATA and WEIGHTS may be HOST:/path on an inventory host (a packaged dataset's
    obj.data): the training host fetches them first, only the files it lacks.
    Before anything is queued, the cfg (with --set), the memory its training needs,
    WEIGHTS and the dataset are checked: bad input exits 2 naming file and line.
    Prints the run id. The run is watched: nan stops darknet, and it restarts from its
    newest good checkpoint with safer settings (see `farm status RUN`).
    """
    from farm.remote import flow
    from farm.runs.service import submit_run
    if queue and on_host:
        raise BadInput("--queue and --host both choose the queue", hint="give one of them")
    if on_host:
        flow.inventory_of(ctx.settings).host(on_host)
        queue = host_queue(on_host)
    origin, data = flow.remote_location(ctx.settings, data)
    if weights:
        weights_host, weights = flow.remote_location(ctx.settings, weights)
        if weights_host != origin:
            raise BadInput("DATA and WEIGHTS must be on the same host",
                           hint="give both as HOST:/path of one host, or both local")
    if origin and origin != ctx.settings.host_name:
        _check_remote(ctx, origin, [p for p in (data, weights) if p])
    if eval_screens:
        screens_host, path = flow.remote_location(ctx.settings, eval_screens)
        if screens_host == ctx.settings.host_name:
            eval_screens = path
        elif screens_host is not None:  # fetched by the host that evaluates
            eval_screens = flow.check_remote_screens(ctx.settings, screens_host, path)
    store = ctx.store()
    task_id = str(uuid.uuid4())
    warnings = []
    run = refusing(lambda: submit_run(
        store, ctx.settings, data=data, cfg=cfg, weights=weights,
        overrides=_pairs(sets, "--set"), policy=_pairs(policy, "--policy"),
        eval_every=eval_every, task_id=task_id, origin=origin, queue=queue,
        warn=warnings.append, eval_screens=eval_screens,
        rank_by="screens_map50" if eval_screens else "map50"))
    warn_findings(warnings)
    ctx.celery()
    from workers.tasks.enqueue import enqueue_train
    enqueue_train(run.id, queue, task_id=task_id, run=run)
    for warning in run.warnings:
        click.echo(f"farm: warning: {warning}", err=True)
    if on_host and not listeners(ctx, queue):
        click.echo(f"farm: warning: no worker listens on {queue} now: the run waits queued "
                   f"until {on_host}'s worker is up (`farm hosts workers`)", err=True)
    click.echo(run.id)
    return follow(ctx, run.id) if wait else EXIT_OK


def _check_remote(ctx: Context, host: str, paths: list[str]) -> None:
    """Refuse now, not on the training host an hour later, a path missing on its host."""
    from farm.remote import flow
    with flow.connect(ctx.settings, host) as h:
        for path in paths:
            code, _, err = h.run(["test", "-f", path])
            if code != 0:
                raise BadInput(f"{host}:{path} does not exist",
                               hint=f"check the path on {host} (`farm dataset package` "
                                    "prints it)")


def follow(ctx: Context, run_id: str, poll: float = 1.0) -> int:
    """Show the run's progress until it ends and its last evaluation is recorded; then
    its summary. The exit code says how it ended."""
    from workers.cli import live
    store = ctx.store()
    out = live.LiveOutput()
    printer = live.EvaluationPrinter(out)
    seen_attempts = 0
    try:
        while True:
            run = store.runs.load(run_id)
            for a in run.attempts[seen_attempts:]:
                out.event(f"attempt {a.number} started: {a.reason}")
            seen_attempts = len(run.attempts)
            evaluations = store.evaluations.all(run_id)
            printer.show(run_id, evaluations)
            if run.state.finished:
                break
            if run.state is RunState.RUNNING and run.current and run.current.pid:
                out.progress(live.run_progress(store, run, evaluations).line())
            time.sleep(poll)
        missing = wait_for_evaluations(ctx, [run_id], out, printer)
    finally:
        out.close()
    for line in live.summary_lines(store, run, ctx.settings.host_name,
                                   missing.get(run_id, set())):
        click.echo(line)
    return EXIT_OK if run.state is RunState.COMPLETED else EXIT_FAILED


def wait_for_evaluations(ctx: Context, run_ids: list[str], out, printer
                         ) -> dict[str, set[int]]:
    """Wait (at most eval_wait seconds) for the evaluations sent for `run_ids`, if an eval
    worker is up to make them; what is still missing."""
    from workers.app import ROUTES
    from workers.cli import live
    queue = ROUTES["farm.eval.*"]["queue"]
    return live.await_evaluations(ctx.store(), run_ids, listening=lambda: listeners(ctx, queue),
                                  queue=queue, timeout=ctx.settings.eval_wait, out=out,
                                  printer=printer)


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    d = time.time() - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def _fmt_loss(value: str | float | None) -> str:
    if value is None:
        return "-"
    x = float(value)
    return f"{x:.4g}" if math.isfinite(x) else str(x)


@click.command("runs")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def runs_cmd(ctx: Context, limit: int) -> None:
    """List runs, newest first: progress, speed, time left, best mAP, and why a run failed."""
    from farm.runs.progress import format_duration, format_map, format_rate
    from workers.cli.live import run_progress
    store = ctx.store()
    rows = store.runs.recent(limit)
    if not rows:
        click.echo("no runs yet: `farm train DATA CFG` queues one")
        return
    click.echo(f"{'RUN':<16} {'STATE':<10} {'ITER':>11} {'SPEED':>10} {'ETA':>6} "
               f"{'AVG LOSS':>9} {'BEST mAP':>15} {'ATT':>3}  {'CREATED':<9}  "
               f"TRAINED WITH / WHY")
    for run in rows:
        p = run_progress(store, run, evaluations=[])
        best = store.evaluations.best(run.id)
        best_text = (f"{format_map(best.map)} @{best.iteration}"
                     if best and best.map is not None else "-")
        running = run.state is RunState.RUNNING
        waits = run.state is RunState.QUEUED and run.message.startswith("waiting")
        why = f"; {run.message}" if run.state is RunState.FAILED or waits else ""
        click.echo(f"{run.id:<16} {run.state.value:<10} {f'{p.iteration}/{run.max_batches}':>11} "
                   f"{format_rate(p.speed) if running else '-':>10} "
                   f"{format_duration(p.eta) if running else '-':>6} "
                   f"{_fmt_loss(p.avg_loss):>9} {best_text:>15} {len(run.attempts):>3}  "
                   f"{_ago(run.created_at):<9}  {effective_settings(run).text}{why}".rstrip())


def status_dict(run: Run, live: dict, maps: list, evaluations: list | None = None,
                best: Evaluation | None = None, pending: set | None = None,
                progress=None) -> dict:
    d = run.to_dict()
    d["live"] = live
    d["maps"] = maps
    d["evaluations"] = [e.to_dict() for e in evaluations or ()]
    d["best"] = best.to_dict() if best else None
    d["evaluations_pending"] = sorted(pending or ())
    if progress is not None:
        d["progress"] = {"iteration": progress.iteration, "max_batches": progress.max_batches,
                         "iterations_per_second": progress.speed,
                         "eta_seconds": progress.eta, "restarts": progress.restarts}
    d["effective"] = effective_settings(run).to_dict()
    d["effective_by_attempt"] = [effective_settings(run, a).to_dict() for a in run.attempts]
    return d


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@pass_ctx
def status(ctx: Context, run_id: str, as_json: bool) -> None:
    """Show a run: its attempts, their outcomes, what changed between them, and its
    evaluations (mAP per checkpoint) with the best."""
    from workers.cli.live import run_progress
    store = ctx.store()
    run = store.runs.find(run_id)
    live = store.progress.live(run.id)
    evaluations = store.evaluations.all(run.id)
    best = store.evaluations.best(run.id)
    pending = store.evaluations.pending(run.id)
    progress = run_progress(store, run, evaluations)
    if as_json:
        click.echo(json.dumps(status_dict(run, live, store.progress.maps(run.id), evaluations, best,
                                          pending, progress), indent=2))
        return
    click.echo(f"run {run.id}: {run.state.value}" + (f" - {run.message}" if run.message else ""))
    click.echo(f"  data {run.data}\n  cfg  {run.cfg}\n  weights {run.weights or '(scratch)'}")
    if run.overrides:
        click.echo("  set  " + " ".join(f"{k}={v}" for k, v in run.overrides.items()))
    if live:
        click.echo(f"  now  {progress.line()}")
    eff = effective_settings(run)
    click.echo(f"  trained with: {eff.text}"
               + (f" (attempt {eff.attempt}, which wrote its newest good weights)"
                  if eff.attempt and run.good_checkpoint else ""))
    for warning in run.warnings:
        click.echo(f"  warning: {warning}")
    for a in run.attempts:
        outcome = a.outcome.value if a.outcome else "running"
        span = f"iterations {a.start_iteration}->{a.last_iteration if a.last_iteration is not None else '?'}"
        click.echo(f"  attempt {a.number} [{outcome}] {span}, exit {a.exit_code}, on {a.host}")
        click.echo(f"    why:     {a.reason}")
        if a.changes:
            click.echo("    changed: " + ", ".join(f"{k} {b} -> {c}" for k, (b, c) in a.changes.items()))
        click.echo("    hyper:   " + ", ".join(f"{k}={v}" for k, v in a.hyper.items()))
        if a.message:
            click.echo(f"    ended:   {a.message}")
        if a.log_path:
            click.echo(f"    log:     {a.log_path}")
    good = [c for c in run.checkpoints if c.finite]
    bad = [c for c in run.checkpoints if not c.finite]
    if run.checkpoints:
        click.echo(f"  checkpoints: {len(good)} finite, {len(bad)} poisoned (after nan); "
                   f"newest good: {run.good_checkpoint or '-'}")
    _print_evaluations(ctx, store, run, evaluations, best, pending)


def _print_evaluations(ctx: Context, store, run: Run, evaluations: list[Evaluation],
                       best: Evaluation | None, pending: set[int]) -> None:
    from farm.runs.progress import format_map
    if not evaluations and not pending:
        if run.state.finished:  # "yet" would promise one that will never come
            click.echo("  evaluations: none (it ended without a finite checkpoint to "
                       "evaluate)" if not any(c.finite for c in run.checkpoints)
                       else "  evaluations: none")
        else:
            click.echo(f"  evaluations: none yet (a finite checkpoint every "
                       f"{run.eval_every} iterations and the final one are evaluated)")
        return
    screens = bool(run.eval_screens)  # then the screens mAP beside the tile mAP
    click.echo("  evaluations (mAP@0.50 on the valid list" + (
        f"; SCREENS: on the whole screenshots of {run.eval_screens}; ranked by "
        f"{'screens mAP' if run.rank_by == 'screens_map50' else 'tile mAP'}"
        if screens else "") + "):")
    click.echo(f"    {'ITER':>6} {'mAP':>9}" + (f" {'SCREENS':>9}" if screens else "")
               + f" {'P':>5} {'R':>5} {'F1':>5}  EVALUATOR")
    for e in evaluations:
        mark = "  <- best" if best and best.iteration == e.iteration else ""
        if e.error:
            click.echo(f"    {e.iteration:>6} failed: {e.error}")
            continue
        prf = " ".join(f"{'-' if v is None else format(float(v), '.2f'):>5}"
                       for v in (e.precision, e.recall, e.f1))
        click.echo(f"    {e.iteration:>6} {format_map(e.map or 0.0):>9}"
                   + (f" {_screens_map(e):>9}" if screens else "") + f" {prf}  "
                   f"{e.evaluator or '?'}{mark}")
        if screens and e.screens and e.screens.error:
            click.echo(f"{'':>11}screens not evaluated: {e.screens.error}")
    if pending:
        click.echo("    pending: iteration " + ", ".join(str(i) for i in sorted(pending))
                   + " (sent to the eval queue, not recorded yet)")
    if best and best.map is not None:
        from farm.eval.checkpoints import best_weights_location
        found = best_weights_location(store, run, ctx.settings.host_name)
        where = f", weights {found[1]} on {found[0] or ctx.settings.host_name}" if found else ""
        click.echo(f"  best: iteration {best.iteration}, mAP@0.50 "
                   f"{format_map(best.map)}"
                   + (f", screens mAP@0.50 {_screens_map(best)}" if screens else "") + where)


def _screens_map(e: Evaluation) -> str:
    from farm.runs.progress import format_map
    if e.screens and e.screens.error:
        return "failed"
    return format_map(e.screens_map)


@click.command()
@click.argument("run_id")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines of the tail to print first.")
@pass_ctx
def logs(ctx: Context, run_id: str, follow_: bool, lines: int) -> int:
    """Print darknet's output for a run (from any host: the tail is kept in Redis).

    Each attempt starts with a `--- attempt N ... (why) ---` line. A run that ended
    before darknet ever started (bad input found first) has no output: its reason is
    printed instead, and the exit code is 1."""
    store = ctx.store()
    run = store.runs.find(run_id)
    tail, seen = store.progress.log_since(run.id, 0)
    for line in tail[-lines:] if lines else tail:
        click.echo(line)
    while follow_:
        new, seen = store.progress.log_since(run.id, seen)
        for line in new:
            click.echo(line)
        if not new:
            run = store.runs.load(run.id)
            if run.state.finished:
                break
        time.sleep(0.5)
    run = store.runs.load(run.id)
    if run.state.finished and not any(a.pid for a in run.attempts):
        click.echo(f"{run.id}: darknet never started: the run {run.state.value} before it "
                   f"could: {run.message or 'no reason recorded'}", err=True)
        return EXIT_OK if run.state is RunState.CANCELLED else EXIT_FAILED
    if not seen:
        click.echo(f"{run.id} is {run.state.value}: no output yet", err=True)
    return EXIT_OK


@click.command()
@click.argument("run_id")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for darknet to stop.")
@pass_ctx
def cancel(ctx: Context, run_id: str, timeout: float) -> int:
    """Cancel a run: its darknet process group is killed and the run marked cancelled."""
    from farm.runs.cancel import Cancel, cancel
    store = ctx.store()
    run = store.runs.find(run_id)
    done = cancel(store, run, revoke=lambda task_id: ctx.celery().control.revoke(task_id))
    if done is Cancel.ENDED:
        click.echo(f"{run.id} already {run.state.value}")
        return EXIT_OK
    if done is Cancel.BEFORE_START:
        click.echo(f"{run.id} cancelled (it had not started)")
        return EXIT_OK
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.runs.load(run.id)
        if run.state.finished or (run.current and run.current.outcome is Outcome.CANCELLED):
            click.echo(f"{run.id} cancelled")
            return EXIT_OK
        time.sleep(0.2)
    click.echo(f"{run.id}: cancel requested; the worker has not confirmed within {timeout:g} s "
               f"(is it running? `farm status {run.id}`)", err=True)
    return EXIT_FAILED


@click.command()
@click.argument("run_id")
@click.option("--best", is_flag=True, help="The best evaluated weights (default: the newest good checkpoint).")
@click.option("--iteration", type=int, help="The checkpoint at this iteration.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the weights.")
@pass_ctx
def fetch(ctx: Context, run_id: str, best: bool, iteration: int | None, output: str) -> None:
    """Copy a run's weights here from whichever host holds them (sha256 verified)."""
    store = ctx.store()
    run = store.runs.find(run_id)
    host, path = _weights_location(store, run, best, iteration, ctx.settings.host_name)
    if host == ctx.settings.host_name or not host:
        import shutil
        shutil.copyfile(path, output)
    else:
        from workers.cli import pull_from_host
        pull_from_host(ctx, host, path, output)
    click.echo(f"{output} <- {host or 'here'}:{path}")


def _weights_location(store, run: Run, best: bool, iteration: int | None,
                      here: str) -> tuple[str, str]:
    """(host, path) of the weights asked for; BadInput when there are none."""
    if best:
        from farm.eval.checkpoints import best_weights_location
        found = best_weights_location(store, run, here)
        if found is None:
            raise BadInput(f"run {run.id} has no weights yet",
                           hint="wait for its first good checkpoint (`farm status RUN`)")
        return found
    wanted = [c for c in run.checkpoints if c.finite and (
        c.iteration == iteration if iteration is not None else c.path == run.good_checkpoint)]
    if not wanted:
        have = ", ".join(str(c.iteration) for c in run.checkpoints if c.finite) or "none"
        raise BadInput(f"run {run.id} has no good checkpoint"
                       + (f" at iteration {iteration}" if iteration is not None else ""),
                       hint=f"good checkpoints: {have}")
    c = wanted[-1]
    host = run.attempts[c.attempt - 1].host
    if host == here and not os.path.isfile(c.path):
        raise BadInput(f"the checkpoint of run {run.id} at iteration {c.iteration} was "
                       f"removed by the retention policy", path=c.path,
                       hint="`farm fetch RUN` gives the newest good one, --best the best; "
                            "keep_checkpoints=N keeps more of them")
    return host, c.path


COMMANDS = [train, runs_cmd, status, logs, cancel, fetch]
