"""`farm up`, `farm down`, `farm demo`: the embedded one-machine farm."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from farm.errors import FarmUnavailable
from workers.cli import EXIT_FAILED, EXIT_OK, Context, pass_ctx


@click.command()
@click.option("--no-flower", is_flag=True, help="Do not start Flower and the board (workers only).")
@pass_ctx
def up(ctx: Context, no_flower: bool) -> int:
    """Start the farm here, in the foreground: Redis, a gpu and a cpu worker, beat, Flower.

    Ctrl-C stops all of it. Runs that were training resume from their newest good
    checkpoint at the next `farm up`.
    """
    from workers.embedded import EmbeddedFarm, claim_pidfile
    s = ctx.settings
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    pid = claim_pidfile(Path(s.data_dir))
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
        pid.unlink(missing_ok=True)


@click.command()
@click.option("--timeout", default=60.0, show_default=True)
@pass_ctx
def down(ctx: Context, timeout: float) -> int:
    """Stop the farm that `farm up` started with this data directory."""
    from workers.embedded import pidfile
    path = pidfile(Path(ctx.settings.data_dir))
    try:
        pid = int(path.read_text())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        raise FarmUnavailable(f"no farm is up with data dir {ctx.settings.data_dir}",
                              hint="nothing to stop; `farm up` starts one") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            click.echo("farm stopped")
            return EXIT_OK
        time.sleep(0.2)
    click.echo(f"farm (pid {pid}) still stopping after {timeout:g} s", err=True)
    return EXIT_FAILED


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has stopped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to make the demo dataset.")
@pass_ctx
def demo(ctx: Context, workdir: str | None) -> int:
    """The main job, end to end on the embedded farm: a micro close-mark dataset, a run
    that completes and a run whose learning rate diverges and is restarted by itself."""
    from farm.micro import micro_cfg, micro_dataset
    from farm.runs.service import submit_run
    from workers.cli.runs import follow
    from workers.embedded import EmbeddedFarm
    s = ctx.settings
    root = Path(workdir or Path(s.data_dir) / "demo")
    farm = None
    try:
        ctx.store().ping()
        click.echo(f"using the farm at {s.effective_redis_url}")
    except FarmUnavailable:
        farm = EmbeddedFarm(s)
        farm.start()
        farm.wait_workers()
        click.echo(f"embedded farm started (data in {s.data_dir})")
    try:
        data = micro_dataset(root / "dataset", images=24)
        cfg = micro_cfg(root / "micro.cfg", max_batches=200)
        click.echo(f"dataset: {data}\ncfg:     {cfg}")
        store = ctx.store()
        ctx.celery()
        from workers.tasks.train import enqueue_train
        runs = []
        for label, sets in (("steady, lr 0.001", {}),
                            ("too hot, lr 0.05 burn_in 0", {"learning_rate": "0.05", "burn_in": "0"})):
            run = submit_run(store, s, data=str(data), cfg=str(cfg), overrides=sets)
            run.task_id = enqueue_train(run.id)
            store.save_run(run)
            click.echo(f"queued {run.id} ({label})")
            runs.append(run.id)
        codes = [follow(ctx, run_id) for run_id in runs]
        for run_id in runs:
            run = store.load_run(run_id)
            click.echo(f"\n{run.id}: {run.state.value}, {len(run.attempts)} attempt(s)")
            for a in run.attempts:
                change = ", ".join(f"{k} {b}->{c}" for k, (b, c) in a.changes.items())
                click.echo(f"  attempt {a.number}: {a.outcome.value if a.outcome else 'running'}"
                           f" at iteration {a.last_iteration} {('(' + change + ')') if change else ''}")
        if farm and farm.flower:
            click.echo(f"\nFlower: http://{s.flower_address}:{s.flower_port}/ "
                       f"(login in {Path(s.data_dir) / 'flower.password'})")
        return EXIT_OK if all(c == EXIT_OK for c in codes) else EXIT_FAILED
    finally:
        if farm is not None:
            farm.stop()


COMMANDS = [up, down, demo]
