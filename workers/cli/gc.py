"""`farm gc`: reclaim disk space from finished runs and sweeps (farm.gc)."""
from __future__ import annotations

import click

from farm.darknet.memory import size_text
from workers.cli import Context, pass_ctx


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would go, remove nothing.")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="Good checkpoints kept beside each run's newest (default: the "
                   "keep_checkpoints setting).")
@pass_ctx
def gc(ctx: Context, dry_run: bool, keep: int | None) -> None:
    """Remove what the farm no longer needs, and print each file with its bytes.

    \b
    Of finished runs: darknet's files in attempt-*/backup/, checkpoints beyond the
    newest good one (and --keep more), pins whose evaluation is recorded. Datasets built
    from a recipe that no active sweep and no unfinished run uses. Cut transfers and
    builds (.fetch-*, .part, recipe work folders) untouched for gc_stale_after seconds.
    Queued and running runs, best.weights, logs and pins still waiting for their
    evaluation are never touched: safe while the farm is up.
    """
    from farm.gc import collect
    s = ctx.settings
    verb = "would remove" if dry_run else "removed"

    def show(item) -> None:
        click.echo(f"{verb} {item.path}  {size_text(item.bytes)} ({item.bytes} bytes): "
                   f"{item.why}")
    result = collect(ctx.store(), s, dry_run=dry_run, keep=keep, on_item=show)
    for note in result.notes:
        click.echo(f"kept {note}")
    if dry_run:
        click.echo(f"farm gc --dry-run: {len(result.items)} item(s), {size_text(result.bytes)} "
                   f"({result.bytes} bytes) would be reclaimed in {s.data_dir}; nothing removed")
    else:
        click.echo(f"farm gc: {len(result.items)} item(s) removed, {size_text(result.freed)} "
                   f"({result.freed} bytes) reclaimed in {s.data_dir}")


COMMANDS = [gc]
