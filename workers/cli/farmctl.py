"""`farm up`, `farm down`, `farm demo`: the embedded one-machine farm."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from farm import procs
from farm.errors import FarmUnavailable
from workers.cli import EXIT_FAILED, EXIT_OK, Context, pass_ctx


@click.command()
@click.option("--no-flower", is_flag=True, help="Do not start Flower and the board (workers only).")
@pass_ctx
def up(ctx: Context, no_flower: bool) -> int:
    """Start the farm here, in the foreground: Redis, gpu and cpu workers, beat, Flower.

    It supervises them: a child that dies is restarted (with a backoff; a crash loop is
    given up, with a message). Ctrl-C, SIGTERM or `farm down` stops all of it. Runs that
    were training resume from their newest good checkpoint.
    """
    from workers.embedded import EmbeddedFarm
    s = ctx.settings
    farm = EmbeddedFarm(s, flower=not no_flower)
    try:
        farm.start()
        where = "embedded Redis 127.0.0.1:%d" % s.redis_port if s.embedded else "Redis from FARM_REDIS_URL"
        click.echo(f"farm up on {s.host_name} ({where}); data in {s.data_dir}; logs in {farm.logs}")
        farm.wait_workers()
        click.echo("workers ready; Ctrl-C to stop")
        return farm.serve()
    finally:
        farm.stop()


@click.command()
@click.option("--timeout", default=60.0, show_default=True)
@pass_ctx
def down(ctx: Context, timeout: float) -> int:
    """Stop the farm that `farm up` started with this data directory (or, when that
    `farm up` was killed, whatever it left running)."""
    from workers.embedded import record_path
    from workers.supervision import read_record, stop_leftovers, supervisor_alive
    path = record_path(Path(ctx.settings.data_dir))
    doc = read_record(path)
    pid = supervisor_alive(doc) if doc else None
    if pid is None:
        stopped = stop_leftovers(doc) if doc else []
        path.unlink(missing_ok=True)
        if stopped:
            click.echo(f"the farm's supervisor was gone; stopped what it left: {', '.join(stopped)}")
            return EXIT_OK
        raise FarmUnavailable(f"no farm is up with data dir {ctx.settings.data_dir}",
                              hint="nothing to stop; `farm up` starts one")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            click.echo("farm stopped")
            return EXIT_OK
        time.sleep(0.2)
    click.echo(f"farm (pid {pid}) still stopping after {timeout:g} s", err=True)
    return EXIT_FAILED


DEMO_SWEEP = """\
# farm demo: three trials of the micro network; 0.05 diverges and is restarted by itself
# at half the rate, warming up to it again over 100 iterations (half of the budget)
name: demo
base:
  data: {data}
  cfg: {cfg}
  set: {{burn_in: 0}}
parameters:
  learning_rate: [0.001, 0.004, 0.05]
concurrency: 1
budget: {{iterations: 200}}
objective: map50
eval_every: 100
"""


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to make the demo files.")
@pass_ctx
def demo(ctx: Context, workdir: str | None) -> int:
    """The main job, end to end on the embedded farm: synthesize a close-mark dataset, lint
    and package it, sweep three trials of a micro network (one diverges and is restarted
    by itself), evaluate checkpoints, print the leaderboard, a chart and the board URL."""
    from farm.datasets.package import package
    from farm.datasets.synth import SynthSpec, contact_sheet, synthesize
    from workers.micro import micro_cfg
    from farm.sweeps.export import export_best
    from farm.sweeps.service import advance, submit_sweep
    from farm.sweeps.spec import load_spec
    from workers.cli.sweep import follow
    from workers.embedded import EmbeddedFarm
    s = ctx.settings
    root = Path(workdir or Path(s.data_dir) / "demo")
    root.mkdir(parents=True, exist_ok=True)
    farm = None
    try:
        ctx.store().ping()
        from farm.store.redis import safe_url
        click.echo(f"using the farm at {safe_url(s.effective_redis_url)}")
    except FarmUnavailable:
        farm = EmbeddedFarm(s)
        farm.start()
        try:
            farm.wait_workers()
        except BaseException:
            farm.stop()
            raise
        click.echo(f"embedded farm started (data in {s.data_dir})")
    try:
        click.echo("1/4 synthesizing 96 close-mark images (96x96, marks at true scale)")
        spec = SynthSpec(canvas=(96, 96), mark_px=(14, 30), marks=(1, 2), negatives=0.05)
        records = synthesize(spec, root / "synth", 96, seed=1)
        contact_sheet([(r.image, r.label) for r in records[:24]], root / "contact_sheet.png",
                      cols=6, thumb=96)
        click.echo(f"    contact sheet: {root / 'contact_sheet.png'}")
        click.echo("2/4 linting and packaging")
        result = package([str(root / "synth")], root / "datasets", network=(64, 64),
                         valid_ratio=0.25, seed=1)
        data = Path(result.path) / "obj.data"
        click.echo(f"    dataset {result.dataset_id}: {result.train} train, {result.valid} valid")
        cfg = micro_cfg(root / "micro.cfg", max_batches=200)
        sweep_file = root / "sweep.yaml"
        sweep_file.write_text(DEMO_SWEEP.format(data=data, cfg=cfg))
        click.echo(f"3/4 sweep {sweep_file} (learning rates 0.001, 0.004, 0.05)")
        store = ctx.store()
        ctx.celery()
        from workers.tasks.enqueue import enqueue_train
        sw = submit_sweep(store, s, load_spec(sweep_file), gpu_workers=1)
        advance(store, s, sw.id, enqueue=enqueue_train, early_stop=False)
        code = follow(ctx, sw.id)
        click.echo("4/4 the best trial, as a bundle ready for darknet")
        bundle = export_best(store, sw.id, root / "best", here=s.host_name)
        click.echo(f"    {bundle} (best.cfg, best.weights, obj.data, result.json, chart.png)")
        chart = bundle / "chart.png"
        if chart.exists():
            click.echo(f"    chart: {chart}")
        if farm and farm.flower:
            click.echo(f"board:  http://{s.flower_address}:{s.board_port}/  "
                       f"Flower: http://{s.flower_address}:{s.flower_port}/  "
                       f"(login farm / {Path(s.data_dir) / 'flower.password'})")
        return code
    finally:
        if farm is not None:
            farm.stop()


COMMANDS = [up, down, demo]
