"""`farm detect`, `farm eval`, `farm chart`, `farm board`: looking at what a run learned.

Thin: flags in, farm.eval / farm.runs.chart / dashboard out. A FarmError goes up to the `farm`
command, which prints it and sets the exit code; refused files list every finding first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from farm.errors import BadInput
from workers.cli import Context, parse_size, pass_ctx, refusing

EVALUATOR_CHOICES = ["auto", "opencv", "darknet-valid", "darknet-map"]


def _size(value: str | None, flag: str) -> tuple[int, int] | None:
    return parse_size(value, flag) if value else None


def _names(path: str | None, classes: int) -> list[str]:
    if not path:
        return [str(i) for i in range(classes)]
    try:
        return [n.strip() for n in Path(path).read_text().splitlines() if n.strip()]
    except OSError as e:
        raise BadInput(f"cannot read the names file: {e.strerror}", path=path) from None


@click.command()
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--cfg", "cfg", required=True, type=click.Path(dir_okay=False),
              help="The cfg the weights were trained with.")
@click.option("--names", type=click.Path(dir_okay=False), help="obj.names, for labels.")
@click.option("--tile", "tiled", is_flag=True,
              help="Detect on overlapping network-sized tiles (full-size screenshots).")
@click.option("--tile-size", metavar="WxH", help="Tile size (default: the network size; "
              "another size runs the network at it: a multiple of 32).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default 64).")
@click.option("--thresh", default=0.25, show_default=True, help="Confidence to report.")
@click.option("-o", "--out", "out_dir", default="detections", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the JSON and PNGs.")
@pass_ctx
def detect(ctx: Context, weights, images, cfg, names, tiled, tile_size, overlap, thresh,
           out_dir) -> None:
    """Find objects in IMAGES with WEIGHTS; write detections.json and annotated PNGs.

    \b
    Example (the × in a 1080x2400 screenshot, network trained on 416x416 tiles):
      farm detect backup/net_best.weights shot.png --cfg net.cfg --names obj.names --tile
    """
    from farm.eval.detect import DnnDetector, annotate, found_json, read_image
    import cv2
    # the weights are judged by their own layout (header, cfg), not the local darknet's
    # the network drops what is under --thresh itself: NMS keeps the same boxes above it,
    # and a bot's screenshot is no mAP curve (farm eval keeps darknet's 0.005)
    detector = refusing(lambda: DnnDetector(cfg, weights, thresh=thresh))
    labels = _names(names, detector.classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"weights": os.path.abspath(weights), "cfg": os.path.abspath(cfg),
              "tiled": tiled, "thresh": thresh, "images": []}
    for k, image_path in enumerate(images):
        image = read_image(image_path)
        h, w = image.shape[:2]
        found = (detector.detect_tiled(image, tile=_size(tile_size, "--tile-size"),
                                       overlap=overlap) if tiled else detector.detect(image))
        png = out / f"{Path(image_path).stem}.detections.png"
        if png.exists() and any(png.name == Path(i["annotated"]).name for i in report["images"]):
            png = out / f"{Path(image_path).stem}-{k}.detections.png"
        cv2.imwrite(str(png), annotate(image, found, labels, thresh))
        dets = found_json(found, labels, thresh, (w, h))
        report["images"].append({"image": os.path.abspath(image_path), "width": w, "height": h,
                                 "annotated": str(png), "detections": dets})
        best = ", ".join(f"{d['name']} {d['confidence']:.0%} at ({d['x0']:.0f},{d['y0']:.0f})"
                         for d in dets[:3])
        click.echo(f"{image_path}: {len(dets)} found{': ' + best if best else ''}")
    (out / "detections.json").write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out / 'detections.json'} and {len(images)} annotated PNG(s)")


@click.command("eval")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), help="obj.data.")
@click.option("--screens", metavar="DATA", help="A screens set instead of --data: whole "
                                                "screenshots, detected tile by tile.")
@click.option("--overlap", type=int, help="With --screens: tile overlap in pixels "
                                          "(default: 64, half a small tile, or more to hold "
                                          "the largest labelled mark whole).")
@click.option("--cfg", "cfg", required=True, type=click.Path(dir_okay=False))
@click.option("--tiled", is_flag=True, help="Full screenshots: detect on tiles, then score.")
@click.option("--tile-size", metavar="WxH", help="Tile size (default: the network size; "
              "another size runs the network at it: a multiple of 32).")
@click.option("--points", type=click.Choice(["0", "11", "101"]), default="0",
              show_default=True, help="0: area under curve (darknet's default); 11: VOC2007; "
                                      "101: COCO.")
@click.option("--iou-thresh", default=0.5, show_default=True)
@click.option("--thresh", default=0.25, show_default=True, help="Confidence for P/R/F1.")
@click.option("--evaluator", type=click.Choice(EVALUATOR_CHOICES), default="auto",
              show_default=True, help="auto: `detector map` where darknet has it, else "
                                      "OpenCV DNN (farm-native).")
@click.option("--base-dir", type=click.Path(file_okay=False),
              help="Folder relative paths in obj.data and the list are resolved against.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def eval_cmd(ctx: Context, weights, data, screens, overlap, cfg, tiled, tile_size, points,
             iou_thresh, thresh, evaluator, base_dir, as_json) -> None:
    """mAP of WEIGHTS on the valid list of DATA, as `darknet detector map` prints it.

    The valid list is linted first; weights that do not fit CFG are refused. With
    --screens, the screens mAP: each whole screenshot detected tile by tile, the tiles'
    boxes merged, scored against the full-screen labels.
    """
    from farm.eval.evaluate import evaluate_checkpoint, format_result
    s = ctx.settings
    if bool(data) == bool(screens):
        raise BadInput("give --data (obj.data) or --screens (a screens set), one of them",
                       hint="farm eval W --cfg net.cfg --screens ~/datasets/<id>")
    if screens:
        from farm.eval.screens import evaluate_screens
        result = refusing(lambda: evaluate_screens(
            weights, screens=screens, cfg=cfg, dialect=s.darknet_dialect, darknet=s.darknet,
            tile=_size(tile_size, "--tile-size"), overlap=overlap, points=int(points),
            iou_thresh=iou_thresh, conf_thresh=thresh))
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json
                   else format_result(result))
        return
    result = refusing(lambda: evaluate_checkpoint(
        weights, data=data, cfg=cfg, evaluator=evaluator, darknet=s.darknet,
        dialect=s.darknet_dialect, points=int(points), iou_thresh=iou_thresh,
        conf_thresh=thresh, tiled=tiled, tile=_size(tile_size, "--tile-size"),
        base_dir=base_dir))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_result(result))


@click.command()
@click.argument("run_id")
@click.option("-o", "--out", "out", default="chart.png", show_default=True,
              type=click.Path(dir_okay=False))
@pass_ctx
def chart(ctx: Context, run_id: str, out: str) -> None:
    """Draw a run's avg loss (each attempt its own colour), loss range, learning rate,
    mAP and restarts to a PNG: the board's chart, as a file."""
    from farm.plot import runchart
    store = ctx.store()
    run = store.runs.find(run_id)
    drawing = runchart.for_run(store, run, title=f"{run.id}  {run.state.value}")
    Path(out).write_bytes(runchart.draw(drawing, runchart.PNG_SIZE).to_png())
    click.echo(f"wrote {out} ({drawing.n} iterations, {len(run.attempts)} attempt(s))")


@click.command()
@click.option("--address", help="Listen address (default: Flower's, FARM_FLOWER_ADDRESS).")
@click.option("--port", type=int, help="Port (default FARM_BOARD_PORT).")
@pass_ctx
def board(ctx: Context, address: str | None, port: int | None) -> int:
    """Serve the farm board (runs, live charts, lineage, logs) in the foreground.

    Behind Flower's login: user `farm`, the password in <data_dir>/flower.password
    (a login form in a browser, HTTP basic for scripts). Prometheus scrapes /metrics
    with the bearer token in <data_dir>/metrics.token.
    """
    from dashboard.app import serve
    return serve(ctx.settings, address=address, port=port)


COMMANDS = [detect, eval_cmd, chart, board]
