"""`farm train`, `runs`, `status`, `logs`, `cancel`: training runs from the command line."""
from __future__ import annotations

import json
import math
import time
import uuid

import click

from farm.errors import BadInput
from farm.runs.model import Outcome, Run, RunState
from workers.cli import EXIT_FAILED, EXIT_OK, Context, listeners, pass_ctx


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
@click.option("--eval-every", default=1000, show_default=True, metavar="N",
              help="Evaluate a finite checkpoint every N iterations (and the final one).")
@click.option("--queue", metavar="QUEUE", help="Queue to train on (default gpu; host.<name> pins a host).")
@click.option("--host", "on_host", metavar="HOST", help="Train on this inventory host (queue host.HOST).")
@click.option("--wait", is_flag=True, help="Follow the run to its end; exit 0 only if it completed.")
@click.option("--eval-screens", "eval_screens", metavar="DATA",
              help="A screens set (`farm dataset package --kind screens`): every evaluation "
                   "also scores it, and the run's best weights are the best on it.")
@pass_ctx
def train(ctx: Context, data, cfg, weights, sets, policy, eval_every, queue, on_host,
          wait, eval_screens) -> int:
    """Queue a darknet training run of DATA (obj.data) and CFG, from WEIGHTS if given.

    DATA and WEIGHTS may be HOST:/path on an inventory host (a packaged dataset's
    obj.data): the training host fetches them first, only the files it lacks.
    Prints the run id. The run is watched: nan stops darknet, and it restarts from its
    newest good checkpoint with safer settings (see `farm status RUN`).
    """
    from farm.remote import flow
    from farm.runs.service import submit_run
    if queue and on_host:
        raise BadInput("--queue and --host both choose the queue", hint="give one of them")
    if on_host:
        flow.inventory_of(ctx.settings).host(on_host)
        queue = f"host.{on_host}"
    origin, data = flow.remote_location(ctx.settings, data)
    if weights:
        weights_host, weights = flow.remote_location(ctx.settings, weights)
        if weights_host != origin:
            raise BadInput("DATA and WEIGHTS must be on the same host",
                           hint="give both as HOST:/path of one host, or both local")
    if origin and origin != ctx.settings.host_name:
        _check_remote(ctx, origin, [p for p in (data, weights) if p])
    store = ctx.store()
    task_id = str(uuid.uuid4())
    run = submit_run(store, ctx.settings, data=data, cfg=cfg, weights=weights,
                     overrides=_pairs(sets, "--set"), policy=_pairs(policy, "--policy"),
                     eval_every=eval_every, task_id=task_id, origin=origin, queue=queue,
                     eval_screens=eval_screens,
                     rank_by="screens_map50" if eval_screens else "map50")
    ctx.celery()
    from workers.tasks.train import enqueue_train
    enqueue_train(run.id, queue, task_id=task_id)
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
    """Print attempts and progress until the run ends; the exit code says how it ended."""
    store = ctx.store()
    seen_attempts, last_line = 0, ""
    while True:
        run = store.load_run(run_id)
        for a in run.attempts[seen_attempts:]:
            click.echo(f"attempt {a.number} started: {a.reason}", err=True)
        seen_attempts = len(run.attempts)
        live = store.live(run_id)
        if live:
            line = (f"iteration {live['iteration']}/{run.max_batches} "
                    f"avg loss {float(live['avg_loss']):.4g} (attempt {live['attempt']})")
            if line != last_line:
                click.echo(line, err=True)
                last_line = line
        if run.state.finished:
            click.echo(f"{run.id}: {run.state.value}: {run.message}")
            return EXIT_OK if run.state is RunState.COMPLETED else EXIT_FAILED
        time.sleep(poll)


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    d = time.time() - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def _fmt_loss(value: str | None) -> str:
    if value is None:
        return "-"
    x = float(value)
    return f"{x:.4g}" if math.isfinite(x) else str(x)


@click.command("runs")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def runs_cmd(ctx: Context, limit: int) -> None:
    """List runs, newest first."""
    store = ctx.store()
    rows = store.load_runs(limit)
    if not rows:
        click.echo("no runs yet: `farm train DATA CFG` queues one")
        return
    click.echo(f"{'RUN':<16} {'STATE':<10} {'ITER':>11} {'AVG LOSS':>9} {'ATT':>3}  CREATED")
    for run in rows:
        live = store.live(run.id)
        it = f"{live.get('iteration', run.last_iteration)}/{run.max_batches}"
        click.echo(f"{run.id:<16} {run.state.value:<10} {it:>11} "
                   f"{_fmt_loss(live.get('avg_loss')):>9} {len(run.attempts):>3}  {_ago(run.created_at)}")


def status_dict(run: Run, live: dict, maps: list) -> dict:
    d = run.to_dict()
    d["live"] = live
    d["maps"] = maps
    return d


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@pass_ctx
def status(ctx: Context, run_id: str, as_json: bool) -> None:
    """Show a run: its attempts, their outcomes, and what changed between them."""
    store = ctx.store()
    run = store.find_run(run_id)
    live = store.live(run.id)
    if as_json:
        click.echo(json.dumps(status_dict(run, live, store.maps(run.id)), indent=2))
        return
    click.echo(f"run {run.id}: {run.state.value}" + (f" - {run.message}" if run.message else ""))
    click.echo(f"  data {run.data}\n  cfg  {run.cfg}\n  weights {run.weights or '(scratch)'}")
    if run.overrides:
        click.echo("  set  " + " ".join(f"{k}={v}" for k, v in run.overrides.items()))
    if live:
        click.echo(f"  now  iteration {live['iteration']}/{run.max_batches}, "
                   f"avg loss {_fmt_loss(live['avg_loss'])}")
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
    _echo_evaluations(run, store.evaluations(run.id), store.best_evaluation(run.id))


def _echo_evaluations(run: Run, evaluations: list[dict], best: dict | None) -> None:
    """Tile mAP and screens mAP side by side: the best checkpoint and the newest one."""
    if not evaluations:
        return
    ranked = "screens mAP" if run.rank_by == "screens_map50" else "tile mAP"
    click.echo(f"  evaluations: {len(evaluations)}, ranked by {ranked}"
               + (f" on {run.eval_screens}" if run.eval_screens else ""))
    for what, e in (("best", best), ("newest", evaluations[-1])):
        if e:
            click.echo(f"    {what + ':':<8} iteration {e['iteration']}: {_maps(e)}")


def _maps(e: dict) -> str:
    if e.get("error"):
        return f"not evaluated: {e['error']}"
    text = f"tile mAP {_pct(e.get('map'))}"
    screens = e.get("screens")
    if isinstance(screens, dict):
        text += (f", screens mAP {_pct(screens.get('map'))}" if not screens.get("error")
                 else f", screens not evaluated: {screens['error']}")
        if not screens.get("error"):
            text += f" (TP {screens.get('tp')}, FP {screens.get('fp')}, FN {screens.get('fn')})"
    return text


def _pct(value) -> str:
    return "-" if value is None else f"{float(value) * 100:.2f} %"


@click.command()
@click.argument("run_id")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines of the tail to print first.")
@pass_ctx
def logs(ctx: Context, run_id: str, follow_: bool, lines: int) -> None:
    """Print darknet's output for a run (from any host: the tail is kept in Redis)."""
    store = ctx.store()
    run = store.find_run(run_id)
    tail, seen = store.log_since(run.id, 0)
    for line in tail[-lines:] if lines else tail:
        click.echo(line)
    while follow_:
        new, seen = store.log_since(run.id, seen)
        for line in new:
            click.echo(line)
        if not new and store.load_run(run.id).state.finished:
            break
        time.sleep(0.5)


@click.command()
@click.argument("run_id")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for darknet to stop.")
@pass_ctx
def cancel(ctx: Context, run_id: str, timeout: float) -> int:
    """Cancel a run: its darknet process group is killed and the run marked cancelled."""
    store = ctx.store()
    run = store.find_run(run_id)
    if run.state.finished:
        click.echo(f"{run.id} already {run.state.value}")
        return EXIT_OK
    store.request_cancel(run.id)
    if run.state is RunState.QUEUED and store.lease_holder(run.id) is None:
        if run.task_id:
            ctx.celery().control.revoke(run.task_id)
        run.state, run.message, run.ended_at = RunState.CANCELLED, "cancelled before it started", time.time()
        store.save_run(run)
        click.echo(f"{run.id} cancelled (it had not started)")
        return EXIT_OK
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.load_run(run.id)
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
    run = store.find_run(run_id)
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
        from farm.eval.evaluate import best_weights_location
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
    return run.attempts[c.attempt - 1].host, c.path


COMMANDS = [train, runs_cmd, status, logs, cancel, fetch]
