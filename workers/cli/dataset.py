"""`farm dataset …`: synthesize, import labelImg, tile, package, lint, export, extract.

Thin: each command parses flags and calls farm.datasets; FarmError propagates to the
top-level `farm` command, which prints it without a traceback and sets the exit code.
Progress bars go to stderr so that stdout stays parseable.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
from pathlib import Path

import click
import yaml

from farm.datasets import package as pkg
from farm.datasets import synth, tile, voc
from farm.darknet.dialect import Dialect
from farm.errors import BadInput, FindingsError
from farm.queues import host_queue
from workers.cli import parse_size, pass_ctx, require_listener, wait_task

EXIT_FINDINGS = 2


@click.group("dataset")
def dataset() -> None:
    """Make, check and ship training datasets.

    \b
    Examples:
      farm dataset synth out/syn -n 3000 --canvas tile --workers 4
      farm dataset import-voc labelimg/ --names obj.names --out out/shots
      farm dataset tile out/shots --out out/tiles --size 416x416 --overlap 64
      farm dataset package out/syn out/tiles --names obj.names --root ~/datasets
      farm dataset lint ~/datasets/<id>/obj.data
    """


# --------------------------------------------------------------------------- helpers

def _size(value: str, flag: str) -> tuple[int, int]:
    return parse_size(value, flag, synth.CANVAS_PRESETS)


def _numbers(value: str, flag: str, n: int, sep: str = ",") -> list[float]:
    try:
        numbers = [float(v) for v in value.split(sep)]
    except ValueError:
        numbers = []
    if len(numbers) != n:
        raise BadInput(f"{flag} {value!r} needs {n} numbers separated by '{sep}'",
                       hint=f"for example {flag} " + sep.join(["1"] * n))
    return numbers


def _progress(length: int, label: str):
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


def _echo_findings(findings) -> None:
    for f in findings:
        click.echo(str(f), err=True)


# --------------------------------------------------------------------------- synth

def _load_spec(spec_file: str | None) -> dict:
    if not spec_file:
        return {}
    try:
        data = yaml.safe_load(Path(spec_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"cannot read the synthesis spec: {e}", path=spec_file,
                       hint="a YAML or JSON mapping of SynthSpec settings") from None
    if not isinstance(data, dict):
        raise BadInput("the synthesis spec is not a mapping", path=spec_file,
                       hint="write settings as `key: value` lines")
    return data


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // parts))
    return [(s, min(step, n - s)) for s in range(0, n, step)]


def _synth_chunk(args) -> int:
    """One worker process's share; module level so that multiprocessing can import it."""
    spec_dict, out_dir, n, seed, start, count = args
    synth.synthesize(synth.SynthSpec.from_dict(spec_dict), out_dir, n, seed, start, count)
    return count


def _single_thread() -> None:
    import cv2
    cv2.setNumThreads(1)  # one process per core: OpenCV threads would only contend


@dataset.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("-n", "--count", "n", type=int, default=1000, show_default=True,
              help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--spec", "spec_file", metavar="FILE", help="YAML/JSON of synthesis settings.")
@click.option("--canvas", help="tile (416x416), screen (1080x2400) or WIDTHxHEIGHT.")
@click.option("--mark-px", metavar="MIN-MAX", help="Mark size at true scale, e.g. 24-48.")
@click.option("--template", "templates", multiple=True, metavar="PNG",
              help="Mark template with alpha (repeatable); default: a drawn ×.")
@click.option("--colour-key", metavar="R,G,B", help="Template background colour to cut out.")
@click.option("--background", "backgrounds", multiple=True, metavar="PATH",
              help="Background image or folder (repeatable); default: generated UI screens.")
@click.option("--negatives", type=float, help="Fraction of images without a mark.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Local processes; the output is the same for any number.")
@click.option("--sheet/--no-sheet", default=True, show_default=True,
              help="Write contact_sheet.png of the first images.")
@click.option("--from-screens", "from_screens", metavar="DATA",
              help="Learn from a screens set: its screenshots (marks painted out) as "
                   "backgrounds, its marks as templates, its mark sizes reproduced.")
def synth_cmd(out_dir, n, seed, spec_file, canvas, mark_px, templates, colour_key,
              backgrounds, negatives, workers, sheet, from_screens) -> None:
    """Synthesize N images with "×" marks pasted at true scale, and their labels.

    \b
    From the user's own labelled screenshots (a `--kind screens` package):
      farm dataset synth out/syn -n 3000 --from-screens ~/datasets/<id> --canvas 416x416
    """
    if from_screens:
        given = [flag for flag, v in (("--mark-px", mark_px), ("--background", backgrounds),
                                      ("--colour-key", colour_key)) if v]
        if given:
            raise BadInput(f"{', '.join(given)} cannot be used with --from-screens: the "
                           "screens give the backgrounds and the marks' sizes",
                           hint="drop them, or synthesize without --from-screens")
        return _synth_from_screens(out_dir, n, seed, spec_file, canvas, templates, negatives,
                                   workers, sheet, from_screens)
    data = _spec_flags(spec_file, canvas, templates, negatives, n, workers)
    if mark_px:
        data["mark_px"] = _numbers(mark_px, "--mark-px", 2, "-")
    if colour_key:
        data["colour_key"] = [int(v) for v in _numbers(colour_key, "--colour-key", 3)]
    if backgrounds:
        data["backgrounds"] = list(backgrounds)
    spec = synth.SynthSpec.from_dict(data, path=spec_file)
    synth.load_assets(spec)  # bad templates/backgrounds fail here, not in a worker
    with _progress(n, "synth") as bar:
        if workers == 1:
            synth.synthesize(spec, out_dir, n, seed, on_progress=bar.update)
        else:
            _in_pool(_synth_chunk, spec.to_dict(), out_dir, n, seed, workers, bar)
    click.echo(f"{n} images in {Path(out_dir) / 'images'}, labels in {Path(out_dir) / 'labels'}")
    if sheet:
        width = max(6, len(str(n - 1)))
        names = [f"{i:0{width}d}" for i in range(min(n, 48))]
        out = Path(out_dir) / "contact_sheet.png"
        synth.contact_sheet([(Path(out_dir) / "images" / f"{s}.jpg",
                              Path(out_dir) / "labels" / f"{s}.txt") for s in names], out)
        click.echo(f"contact sheet: {out} (look at it before training)")


def _from_screens_chunk(args) -> int:
    """One worker process's share of a synthesis from screens (prepared already)."""
    from farm.datasets.synth import fromscreens
    spec_dict, out_dir, n, seed, start, count = args
    fromscreens.synthesize_from_screens(None, out_dir, n, seed,
                                        fromscreens.ScreenSynthSpec.from_dict(spec_dict),
                                        start=start, count=count, prepared=True)
    return count


def _spec_flags(spec_file, canvas, templates, negatives, n: int, workers: int) -> dict:
    """The synthesis settings of --spec, with the flags both kinds of synthesis take."""
    data = _load_spec(spec_file)
    if canvas:
        data["canvas"] = list(_size(canvas, "--canvas"))
    if templates:
        data["templates"] = list(templates)
    if negatives is not None:
        data["negatives"] = negatives
    if n < 1 or workers < 1:
        raise BadInput("--count and --workers must be at least 1", hint="e.g. -n 1000 --workers 4")
    return data


def _in_pool(chunk_fn, spec_dict: dict, out_dir, n: int, seed: int, workers: int,
             bar) -> None:
    """The n images made by `workers` processes, in chunks (the output is the same)."""
    jobs = [(spec_dict, out_dir, n, seed, s, c) for s, c in _chunks(n, workers * 8)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_single_thread) as pool:
        for done in pool.imap_unordered(chunk_fn, jobs):
            bar.update(done)


def _synth_from_screens(out_dir, n, seed, spec_file, canvas, templates, negatives, workers,
                        sheet, from_screens) -> None:
    from farm.datasets.synth import fromscreens
    from farm.datasets.screens import open_screens
    data = _spec_flags(spec_file, canvas, templates, negatives, n, workers)
    spec = fromscreens.ScreenSynthSpec.from_dict(data, path=spec_file)
    screens = open_screens(from_screens)
    prep = fromscreens.prepare(screens, Path(out_dir), spec.templates)
    for note in prep.notes:
        click.echo(f"farm: {note}", err=True)
    with _progress(n, "synth") as bar:
        if workers == 1:
            fromscreens.synthesize_from_screens(None, out_dir, n, seed, spec, prepared=True,
                                                on_progress=bar.update)
        else:
            _in_pool(_from_screens_chunk, spec.to_dict(), out_dir, n, seed, workers, bar)
    click.echo(f"{n} images in {Path(out_dir) / 'images'}, labels in {Path(out_dir) / 'labels'}"
               f" (painted screens in {Path(out_dir) / 'backgrounds'}, marks in "
               f"{Path(out_dir) / 'templates'})")
    report = fromscreens.size_report(prep.sizes)["long_side_px"]
    click.echo(f"mark sizes from {len(prep.sizes)} labelled marks (long side, screen px): "
               + ", ".join(f"{k} {v:g}" for k, v in report.items()))
    if sheet:
        out = fromscreens.write_sheet(out_dir, prep, n, spec.canvas)
        click.echo(f"contact sheet: {out} (its caption gives the size distributions)")


# --------------------------------------------------------------------------- import-voc

@dataset.command("import-voc")
@click.argument("xml_dir", type=click.Path(file_okay=False))
@click.option("--names", required=True, metavar="FILE", help="obj.names: the class map.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (images/ + labels/).")
@click.option("--images", "image_dir", type=click.Path(file_okay=False),
              help="Image folder when not beside the XML files.")
@click.option("--keep-going", is_flag=True,
              help="Convert the clean files even when others have errors (still exits 2).")
def import_voc_cmd(xml_dir, names, out_dir, image_dir, keep_going) -> None:
    """Convert labelImg Pascal-VOC XML to YOLO labels; report, never guess."""
    try:
        report = voc.import_voc(xml_dir, names, out_dir, image_dir=image_dir,
                                strict=not keep_going)
    except FindingsError as e:
        _echo_findings(e.findings)
        raise
    _echo_findings(report.findings)
    click.echo(f"{report.converted} images, {report.objects} boxes converted into {out_dir}; "
               f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    if report.errors:
        click.get_current_context().exit(EXIT_FINDINGS)


# --------------------------------------------------------------------------- tile

@dataset.command("tile")
@click.argument("src", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--size", default="416x416", show_default=True, help="Tile size (the network's).")
@click.option("--overlap", type=int, default=64, show_default=True,
              help="Pixels shared by neighbouring tiles (at least the mark size).")
@click.option("--min-fraction", type=float, default=0.5, show_default=True,
              help="Keep a cut box when at least this much of it is inside the tile.")
@click.option("--region", metavar="X0,Y0,X1,Y1", help="Part of each image to tile, in fractions.")
@click.option("--keep-empty", type=float, default=1.0, show_default=True,
              help="Fraction of tiles without boxes to keep.")
@click.option("--drop-partial", is_flag=True, help="Skip tiles where a box was cut too much.")
@click.option("--seed", type=int, default=0, show_default=True)
def tile_cmd(src, out_dir, size, overlap, min_fraction, region, keep_empty, drop_partial,
             seed) -> None:
    """Cut large labelled images into network-sized tiles; record each tile's origin."""
    roi = tuple(_numbers(region, "--region", 4)) if region else None
    total = sum(1 for _ in tile.iter_images(src)) if Path(src).is_dir() else 0
    with _progress(total, "tile") as bar:
        report = tile.tile_dataset(src, out_dir, tile=_size(size, "--size"), overlap=overlap,
                                   min_fraction=min_fraction, region=roi, keep_empty=keep_empty,
                                   drop_partial=drop_partial, seed=seed, on_progress=bar.update)
    click.echo(f"{report.tiles} tiles with {report.boxes} boxes in {out_dir}; "
               f"{report.dropped_partial} box pieces under --min-fraction left out, "
               f"{report.skipped} tiles skipped; origins in {report.manifest}")


# --------------------------------------------------------------------------- package

def _datasets_root(root: str | None) -> str:
    if root:
        return root
    from workers.cli import Context
    ctx = click.get_current_context().find_object(Context)
    if ctx is None:
        raise BadInput("no datasets root", hint="pass --root DIR")
    return str(Path(ctx.settings.data_dir) / "datasets")


@dataset.command("package")
@click.argument("sources", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--root", metavar="DIR", help="Datasets root [default: <data dir>/datasets].")
@click.option("--names", metavar="FILE", help="obj.names [default: the sources' own].")
@click.option("--valid-ratio", type=float, default=0.2, show_default=True)
@click.option("--valid-list", metavar="FILE", help="Images (names or paths) for validation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--network", default="416x416", show_default=True,
              help="Network size, for the object-size statistics.")
@click.option("--dialect", default=Dialect.PJREDDIE.value, show_default=True,
              help="darknet dialect the lint checks label paths for.")
@click.option("--no-image-check", is_flag=True, help="Lint: skip the image byte checks.")
@click.option("--kind", type=click.Choice(pkg.KINDS), default="train", show_default=True,
              help="screens: full labelled screenshots kept whole, to score detectors on "
                   "(labelImg folders are imported first).")
def package_cmd(sources, root, names, valid_ratio, valid_list, seed, network, dialect,
                no_image_check, kind) -> None:
    """Package labelled folders into one immutable dataset named by its content.

    \b
    A screens set (what `farm train --eval-screens` and `synth --from-screens` take):
      farm dataset package --kind screens labelimg/ --names obj.names
    """
    total = pkg.count_images(sources) if all(Path(s).is_dir() for s in sources) else 0
    if kind == "screens":
        return _package_screens(sources, root, names, dialect, no_image_check, total)
    with _progress(total, "package") as bar:
        result = pkg.package(sources, _datasets_root(root), names=names, valid_ratio=valid_ratio,
                             seed=seed, valid_list=valid_list,
                             network=_size(network, "--network"), dialect=dialect,
                             check_images=not no_image_check, on_progress=bar.update)
    _echo_packaged(result, "dataset", f"{result.images} images, {result.train} train, "
                                      f"{result.valid} valid")


def _echo_packaged(result, what: str, holds: str) -> None:
    """Warnings to stderr; what was packaged; its obj.data last (for scripts)."""
    for w in result.warnings:
        click.echo(w, err=True)
    state = "created" if result.created else "already there (same content)"
    click.echo(f"{what} {result.dataset_id} {state}: {holds}")
    click.echo(str(Path(result.path) / "obj.data"))


def _package_screens(sources, root, names, dialect, no_image_check, total) -> None:
    from farm.datasets import screens
    try:
        with _progress(total, "screens") as bar:
            result = screens.package_screens(sources, _datasets_root(root), names=names,
                                             dialect=dialect, check_images=not no_image_check,
                                             on_progress=bar.update)
    except FindingsError as e:
        _echo_findings(e.findings)
        raise
    _echo_packaged(result, "screens set",
                   screens.describe(screens.open_screens(result.path)))


# --------------------------------------------------------------------------- lint

@dataset.command("lint")
@click.argument("obj_data", type=click.Path(dir_okay=False))
@click.option("--classes", type=int, help="The cfg's class count [default: obj.data's].")
@click.option("--dialect", default=Dialect.PJREDDIE.value, show_default=True)
@click.option("--base-dir", type=click.Path(file_okay=False),
              help="Resolve relative paths here [default: obj.data's folder].")
@click.option("--no-images", is_flag=True, help="Skip the image byte checks.")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON lines.")
def lint_cmd(obj_data, classes, dialect, base_dir, no_images, as_json) -> None:
    """Check obj.data, its lists and labels the way darknet will read them (exit 2 on errors)."""
    from farm.datasets.lint import lint_obj_data
    report = lint_obj_data(obj_data, classes=classes, dialect=dialect, base_dir=base_dir,
                           check_images=not no_images)
    for f in report.findings:
        click.echo(json.dumps(dataclasses.asdict(f)) if as_json else str(f))
    summary = getattr(report, "summary", None)
    click.echo(summary() if callable(summary) else
               f"{len(report.errors)} errors, {len(report.warnings)} warnings", err=True)
    if report.errors:
        click.get_current_context().exit(EXIT_FINDINGS)


# --------------------------------------------------------------------------- export/extract

@dataset.command("export")
@click.argument("dataset_dir", type=click.Path(file_okay=False))
@click.argument("out_tar_gz", type=click.Path(dir_okay=False))
def export_cmd(dataset_dir, out_tar_gz) -> None:
    """Write a packaged dataset to a .tar.gz."""
    click.echo(pkg.export_dataset(dataset_dir, out_tar_gz))


@dataset.command("extract")
@click.argument("tar_gz", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
def extract_cmd(tar_gz, dest) -> None:
    """Unpack an exported dataset safely, verify it, and point its lists at the new place."""
    path = pkg.extract_dataset(tar_gz, dest)
    click.echo(str(Path(path) / "obj.data"))


# --------------------------------------------------------------------------- across hosts

def _on_host(ctx, text: str, what: str) -> tuple[str, str]:
    from farm.remote import flow
    host, path = flow.remote_location(ctx.settings, text)
    if host is None:
        raise BadInput(f"{what} {text!r} is not HOST:/absolute/path with HOST in the inventory",
                       hint="for example imglabeling:/srv/labelimg (hosts: `farm hosts list`)")
    return host, path


@dataset.command("pull-labels")
@click.argument("source", metavar="HOST:DIR")
@click.option("--names", required=True, metavar="FILE", help="obj.names: the class map.")
@click.option("--on", "on_host", required=True, metavar="HOST",
              help="The host that imports and packages (usually the augment host).")
@click.option("--no-package", is_flag=True, help="Only pull and import.")
@click.option("--valid-ratio", type=float, default=0.2, show_default=True)
@click.option("--network", default="416x416", show_default=True)
@click.option("--kind", type=click.Choice(pkg.KINDS), default="train", show_default=True,
              help="train: a dataset to train on; screens: the whole screenshots, kept to "
                   "evaluate on (`farm train --eval-screens HOST:PATH`).")
@click.option("--timeout", type=float, default=3600, show_default=True)
@pass_ctx
def pull_labels_cmd(ctx, source, names, on_host, no_package, valid_ratio, network, kind,
                    timeout) -> None:
    """Pull labelImg output from the label host, import and package it on --on HOST.

    Prints the dataset as HOST:PATH/obj.data, ready for `farm train ... --host GPUHOST`
    (or, with --kind screens, for `--eval-screens`).
    """
    label_host, remote_dir = _on_host(ctx, source, "SOURCE")
    from farm.remote import flow
    flow.inventory_of(ctx.settings).host(on_host)
    classes = voc.read_names(names)
    require_listener(ctx, on_host)
    from workers.tasks.flow import pull_labels
    result = pull_labels.apply_async(
        args=[label_host, remote_dir, classes, not no_package, valid_ratio,
              list(_size(network, "--network")), kind], queue=host_queue(on_host))
    out = wait_task(result, f"pulling {source} on {on_host}", timeout)
    pulled = out["pulled"]
    click.echo(f"pulled {pulled['fetched']} files ({pulled['bytes']} bytes) from {label_host}; "
               f"{out['converted']} images, {out['objects']} objects imported on {on_host}")
    if "obj_data" in out:
        what = "screens set" if kind == "screens" else "dataset"
        click.echo(f"{what} {out['dataset_id']}: {out['images']} images")
        click.echo(f"{on_host}:{out['obj_data']}")


@dataset.command("sync")
@click.argument("source", metavar="HOST:DATASET_DIR")
@click.option("--to", "to_host", required=True, metavar="HOST", help="The host that fetches it.")
@click.option("--timeout", type=float, default=3600, show_default=True)
@pass_ctx
def sync_cmd(ctx, source, to_host, timeout) -> None:
    """Fetch a packaged dataset to another host (only files it lacks, by content).

    Training does this by itself when a run's data is on another host; sync stages it
    ahead (before a night of runs)."""
    from_host, remote_dir = _on_host(ctx, source, "SOURCE")
    if remote_dir.endswith("/obj.data"):
        remote_dir = remote_dir[:-len("/obj.data")]
    from farm.remote import flow
    flow.inventory_of(ctx.settings).host(to_host)
    require_listener(ctx, to_host)
    from workers.tasks.flow import fetch_dataset
    result = fetch_dataset.apply_async(args=[from_host, remote_dir], queue=host_queue(to_host))
    out = wait_task(result, f"syncing {source} to {to_host}", timeout)
    state = "already there" if out["already"] else (
        f"{out['fetched']} files fetched ({out['bytes']} bytes), {out['linked']} linked")
    click.echo(f"{to_host}:{out['path']}: {state}")
