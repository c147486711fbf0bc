"""`farm cfg make` and `farm cfg check`: generate a training cfg, and check one.

A FarmError (a missing file, a bad value) propagates to the top-level `farm` command,
which prints it and exits with its code; the findings of a check are printed here, one
per line (`file:line: severity: reason; fix: …`), and errors make the exit code 2.
"""
from __future__ import annotations

import os

import click

from farm.darknet.cfg import Cfg, calc_anchors, check_cfg, make_cfg
from farm.darknet.dialect import NAMES as DIALECTS, Dialect
from farm.darknet.memory import estimate, parse_size
from farm.errors import BadInput, Finding, Severity

EXIT_FINDINGS = 2

dialect_option = click.option(
    "--dialect", type=click.Choice(DIALECTS), default=Dialect.PJREDDIE.value,
    show_default=True,
    help="The darknet the cfg is for: pjreddie is Debian's package.",
    callback=lambda ctx, param, value: Dialect(value))


@click.group("cfg")
def cfg() -> None:
    """Generate darknet training cfgs from upstream ones, and check cfgs."""


@cfg.command("make")
@click.argument("base_cfg", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the generated cfg.")
@click.option("--classes", type=click.IntRange(min=1), help="Number of classes.")
@click.option("--names", type=click.Path(dir_okay=False),
              help="obj.names: classes is its number of lines.")
@click.option("--width", type=int, help="Network width (a multiple of 32).")
@click.option("--height", type=int, help="Network height (a multiple of 32).")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--subdivisions", type=int, default=16, show_default=True)
@click.option("--max-batches", type=int,
              help="Default: max(classes×2000, training images, 6000).")
@click.option("--train-images", type=click.IntRange(min=0), default=None,
              help="Training images, for the max_batches default (counted from "
                   "--anchors-from when given).")
@click.option("--learning-rate", type=float)
@click.option("--burn-in", type=click.IntRange(min=0))
@click.option("--anchors-from", "anchors_from", type=click.Path(dir_okay=False),
              help="obj.data whose training labels to compute anchors from.")
@click.option("--anchors", "n_anchors", type=click.IntRange(min=1),
              help="How many anchors to compute (default: as many as the base cfg has).")
@click.option("--base-dir", type=click.Path(file_okay=False),
              help="Folder relative paths in obj.data and its lists start from (default: "
                   "the current folder, then the file's own folder).")
@dialect_option
def make(base_cfg, output, classes, names, width, height, batch, subdivisions, max_batches,
         train_images, learning_rate, burn_in, anchors_from, n_anchors, base_dir,
         dialect) -> None:
    """Write OUTPUT: BASE_CFG set up to train CLASSES classes, then checked.

    Sets classes in every [yolo]/[region] and filters in the [convolutional] before it,
    the training batch/subdivisions, max_batches and steps at 80 % and 90 %; keeps the
    base's comments and order. Nothing is written when the check finds errors.
    """
    base = Cfg.load(base_cfg)
    classes = _classes(classes, names)
    anchors = None
    if n_anchors and not anchors_from:
        raise BadInput("--anchors needs --anchors-from obj.data (the labels to cluster)")
    if anchors_from:
        anchors, counted = _anchors(anchors_from, base_dir or os.getcwd(), base, n_anchors,
                                    width, height, dialect)
        train_images = counted if train_images is None else train_images
    generated = make_cfg(base, classes=classes, width=width, height=height, batch=batch,
                         subdivisions=subdivisions, max_batches=max_batches,
                         train_images=train_images or 0, learning_rate=learning_rate,
                         burn_in=burn_in, anchors=anchors)
    generated.path = output
    findings = check_cfg(generated, training=True, dialect=dialect)
    _print_findings(findings)
    if _errors(findings):
        click.echo(f"{output} not written: fix the errors above, or choose the dialect "
                   "you train with (--dialect)", err=True)
        raise SystemExit(EXIT_FINDINGS)
    generated.save(output)
    click.echo(f"wrote {output}: classes={classes}, {generated.width}×{generated.height}, "
               f"batch={generated.batch}/{generated.subdivisions}, "
               f"max_batches={generated.max_batches}, steps={generated.net_get('steps')}"
               + (f", anchors={generated.output_layers()[-1].get('anchors')}"
                  if anchors else ""))


@cfg.command("check")
@click.argument("cfg_path", metavar="CFG", type=click.Path(dir_okay=False))
@dialect_option
@click.option("--inference", is_flag=True,
              help="Check for detection (batch=1 allowed), not for training.")
@click.option("--memory", metavar="SIZE|here",
              help="Refuse a cfg whose training needs more than SIZE (e.g. 24GB, a GPU's), "
                   "or than this host's RAM (here, in GPU terms with --gpu).")
@click.option("--gpu", is_flag=True, help="Estimate for a GPU (CUDA buffers, no images).")
def check(cfg_path, dialect, inference, memory, gpu) -> None:
    """Print every rule CFG breaks, with its line and the fix, and the memory its
    training needs at its batch/subdivisions; exit 2 on errors."""
    from farm.runs.checks import MemoryLimit, host_memory, memory_findings
    parsed = Cfg.load(cfg_path)
    findings = check_cfg(parsed, training=not inference, dialect=dialect)
    limit = None
    if memory is not None:
        size = host_memory() if memory == "here" else parse_size(memory)
        if size is None:
            raise BadInput(f"--memory {memory!r} is not a size",
                           hint="for example --memory 24GB, or --memory here")
        limit = MemoryLimit(size, "this host's RAM" if memory == "here" else
                            "the limit given (--memory)", gpu=gpu)
    need = None if inference or _errors(findings) else estimate(parsed, dialect=dialect)
    findings += memory_findings(parsed, need, limit)
    _print_findings(findings)
    if need is not None:
        click.echo(f"{cfg_path}: training needs {need.describe(gpu)}")
    errors = _errors(findings)
    click.echo(f"{cfg_path}: {_count(len(errors), 'error')}, "
               f"{_count(len(findings) - len(errors), 'warning')} ({dialect})")
    if errors:
        raise SystemExit(EXIT_FINDINGS)


def _classes(classes: int | None, names: str | None) -> int:
    if names is None:
        if classes is None:
            raise BadInput("how many classes? give --classes N or --names obj.names")
        return classes
    try:
        with open(names, encoding="utf-8", errors="replace") as f:
            count = sum(1 for line in f.read().split("\n") if line.strip())
    except OSError as e:
        raise BadInput(f"cannot read names file: {e.strerror}", path=names) from None
    if count == 0:
        raise BadInput("the names file lists no class", path=names,
                       hint="one class name per line")
    if classes is not None and classes != count:
        raise BadInput(f"--classes {classes} but {names} lists {count} names",
                       hint="give one of them, or make them agree")
    return count


def _anchors(obj_data: str, base_dir: str, base: Cfg, k: int | None, width: int | None,
             height: int | None, dialect: str) -> tuple[list[tuple[int, int]], int]:
    """Anchors clustered from obj.data's training labels, at the network size."""
    from farm.datasets.lint import box_sizes, train_list  # only `make --anchors-from` needs it

    net_w, net_h = width or base.width or 0, height or base.height or 0
    if net_w <= 0 or net_h <= 0:
        raise BadInput("the network size is unknown: give --width and --height")
    sizes, images = box_sizes(train_list(obj_data, base_dir), dialect=dialect,
                              base_dir=base_dir)
    heads = base.output_layers()
    k = k or int(heads[-1].get("num", "1") if heads else 1)
    return calc_anchors(sizes * (net_w, net_h), k, net_w, net_h), images


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def _print_findings(findings: list[Finding]) -> None:
    for f in findings:
        where = f"{f.path}:{f.line}" if f.line else f.path
        click.echo(f"{where}: {f.severity}: {f.reason}; fix: {f.fix}")
