"""`farm acceptance`: labelled screenshots in, a bundle and its held-out screens mAP per
GPU-hour out (farm.acceptance does the steps; this submits the sweep and waits)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from workers.cli import EXIT_FAILED, EXIT_OK, Context, pass_ctx


@click.command("acceptance")
@click.argument("labelled", type=click.Path(file_okay=False))
@click.option("--names", required=True, type=click.Path(dir_okay=False),
              help="obj.names: the classes labelled.")
@click.option("--cfg", "cfg", required=True, type=click.Path(dir_okay=False),
              help="The network to train (its width/height is the tile size).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Start weights.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the split, the synthesis, the spec, the report, best/.")
@click.option("--held-out", default=0.25, show_default=True,
              help="Share of the screenshots kept to judge on.")
@click.option("-n", "--images", default=3000, show_default=True,
              help="Synthesized training tiles.")
@click.option("--learning-rate", "learning_rates", multiple=True, type=float,
              help="A learning rate to try (repeatable) [default: 0.001 and 0.002].")
@click.option("--iterations", default=2000, show_default=True, help="max_batches a trial.")
@click.option("--eval-every", default=500, show_default=True)
@click.option("--concurrency", default=1, show_default=True, help="Trials at once (GPUs).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A [net] value every trial trains with (repeatable).")
@click.option("--seed", default=0, show_default=True)
@click.option("--timeout", default=48 * 3600.0, show_default=True,
              help="Seconds to wait for the sweep.")
@pass_ctx
def acceptance(ctx: Context, labelled, names, cfg, weights, out_dir, held_out, images,
               learning_rates, iterations, eval_every, concurrency, sets, seed,
               timeout) -> int:
    """Split LABELLED screenshots into train and held-out screens, synthesize from the
    train screens, run a small sweep ranked by the held-out screens mAP, report it per
    GPU-hour and export the best trial to OUT/best.

    \b
    On a GPU host (AlexeyAB or hank-ai darknet), with `farm up` running:
      farm acceptance ~/labelimg/close --names obj.names --cfg yolov4-tiny-custom.cfg \\
           --weights yolov4-tiny.conv.29 -o accept/ --learning-rate 0.001 \\
           --learning-rate 0.002 --learning-rate 0.004 --iterations 2000
    """
    from farm import acceptance as acc
    from farm.sweeps.export import export_best
    from farm.sweeps.service import leaderboard_of
    from workers.cli.runs import _pairs
    from workers.cli.sweep import start_sweep
    s = ctx.settings
    store = ctx.store()
    store.ping()
    plan = acc.prepare(labelled, names=names, out=out_dir, cfg=cfg, weights=weights,
                       datasets_root=Path(s.data_dir) / "datasets", held_out=held_out,
                       images=images, learning_rates=tuple(learning_rates) or (0.001, 0.002),
                       iterations=iterations, eval_every=eval_every, concurrency=concurrency,
                       sets=_pairs(sets, "--set"), seed=seed,
                       say=lambda text: click.echo(text, err=True))
    sweep_id = start_sweep(ctx, plan.spec)
    click.echo(f"sweep {sweep_id} submitted ({plan.spec}); waiting for it", err=True)
    deadline = time.monotonic() + timeout
    while True:
        sw, _, rows = leaderboard_of(store, sweep_id)
        if sw.state.value != "running" and _evaluated(store, rows):
            break
        if time.monotonic() > deadline:
            click.echo(f"farm: the sweep did not end within {timeout:g} s; "
                       f"`farm sweep show {sweep_id}`", err=True)
            return EXIT_FAILED
        time.sleep(2.0)
    sw, _, rows = leaderboard_of(store, sweep_id)
    figures = acc.report(plan, {**sw.to_dict(), "state": sw.state.value},
                         [r.to_dict() for r in rows])
    out = Path(out_dir)
    if figures["best"] is not None:
        export_best(store, sweep_id, out / "best", here=s.host_name)
        figures["bundle"] = str(out / "best")
        bundle = json.loads((out / "best" / "result.json").read_text())
        # the run keeps the later of equally good checkpoints (darknet's >=): say which
        figures["best"]["weights_iteration"] = bundle.get("weights_iteration")
    (out / "acceptance.json").write_text(json.dumps(figures, indent=1) + "\n")
    for line in acc.format_report(figures):
        click.echo(line)
    if figures["best"] is None:
        return EXIT_FAILED
    click.echo(f"bundle: {out / 'best'}; report: {out / 'acceptance.json'}")
    return EXIT_OK


def _evaluated(store, rows) -> bool:
    """Every evaluation sent for the trials' checkpoints has landed (they run on the
    eval queue and may end after their run)."""
    for r in rows:
        if r.run_id:
            sent = store.evaluations.sent(r.run_id)
            done = {e.iteration for e in store.evaluations.all(r.run_id)}
            if not sent <= done:
                return False
    return True


COMMANDS = [acceptance]
