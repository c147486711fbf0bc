"""Dataset tasks: thin Celery wrappers around farm.datasets, JSON in and out.

Routing is central (workers.app.ROUTES): `farm.dataset.synth*` goes to the `augment`
queue, the other `farm.dataset.*` tasks to `cpu`. A big synthesis is split into chunks
(`synth_group`); every image is seeded from (seed, index), so the chunking and the hosts
that run it do not change a byte of the output.

`farm.dataset.synth_recipe` builds a sweep's recipe dataset (farm.sweeps.builds): one
task synthesizes and packages it into the worker's data dir, then ticks the sweeps that
wait for it so their trials start at once.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from celery import group

from farm.darknet.dialect import Dialect
from farm.datasets import package as pkg
from farm.datasets import synth, tile as tiling, voc
from workers.app import app

log = logging.getLogger(__name__)


@app.task(name="farm.dataset.synth_chunk")
def synth_chunk(spec_dict: dict, out_dir: str, seed: int, start: int, count: int,
                n: int | None = None) -> dict:
    """Images start..start+count-1; pass n (the set's size) when it exceeds a million."""
    spec = synth.SynthSpec.from_dict(spec_dict)
    records = synth.synthesize(spec, out_dir, n or max(start + count, 1), seed, start, count)
    return {"out_dir": out_dir, "start": start, "count": len(records),
            "boxes": sum(len(r.boxes) for r in records),
            "negatives": sum(not r.boxes for r in records)}


def synth_group(spec_dict: dict, out_dir: str, n: int, seed: int, chunk: int = 500):
    """A Celery group making images 0..n-1 in chunks (out_dir must be shared storage)."""
    return group(synth_chunk.s(spec_dict, out_dir, seed, start, min(chunk, n - start), n)
                 for start in range(0, n, chunk))


@app.task(name="farm.dataset.import_voc")
def import_voc(xml_dir: str, names: str, out_dir: str, image_dir: str | None = None,
               strict: bool = True) -> dict:
    report = voc.import_voc(xml_dir, names, out_dir, image_dir=image_dir, strict=strict)
    return {"converted": report.converted, "objects": report.objects,
            "findings": [dataclasses.asdict(f) for f in report.findings]}


@app.task(name="farm.dataset.tile")
def tile(src: str, out_dir: str, size: list[int] | None = None, overlap: int = 64,
         min_fraction: float = 0.5, region: list[float] | None = None, keep_empty: float = 1.0,
         drop_partial: bool = False, seed: int = 0) -> dict:
    report = tiling.tile_dataset(src, out_dir, tile=tuple(size or (416, 416)), overlap=overlap,
                                 min_fraction=min_fraction,
                                 region=tuple(region) if region else None,
                                 keep_empty=keep_empty, drop_partial=drop_partial, seed=seed)
    return dataclasses.asdict(report)


@app.task(name="farm.dataset.package")
def package(sources: list[str], root: str, names: str | list[str] | None = None,
            valid_ratio: float = 0.2, seed: int = 0, valid_list: str | None = None,
            network: list[int] | None = None, dialect: Dialect = Dialect.PJREDDIE,
            check_images: bool = True) -> dict:
    result = pkg.package(sources, root, names=names, valid_ratio=valid_ratio, seed=seed,
                         valid_list=valid_list, network=tuple(network or (416, 416)),
                         dialect=dialect, check_images=check_images)
    return {**dataclasses.asdict(result), "warnings": list(result.warnings)}


@app.task(name="farm.dataset.synth_recipe", bind=True)
def synth_recipe(self, key: str) -> dict:
    """Build the dataset of recipe `key` (no-op if built, failed or being built)."""
    from farm.darknet import dialect as dialects
    from farm.errors import FarmError
    from farm.sweeps.builds import FINAL, build_recipe
    from workers.tasks import store
    from workers.tasks.enqueue import enqueue_sweep_tick
    s = app.farm_settings
    try:
        dialect = dialects.detect(s.darknet, s.darknet_dialect)
    except FarmError:  # an augment host without darknet: the strictest layout rules
        dialect = dialects.Dialect.PJREDDIE
    st = store()
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    rec = build_recipe(st, s.data_dir, key, worker=worker, host=s.host_name,
                       dialect=dialect)
    if rec.get("state") in FINAL:
        for sweep_id in st.recipes.waiting(key):  # start their trials now
            enqueue_sweep_tick(sweep_id)
    log.info("recipe %s: %s %s", key, rec.get("state"), rec.get("error") or
             rec.get("dataset_id") or "")
    return {k: v for k, v in rec.items() if k != "recipe"}
