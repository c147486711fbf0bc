"""Tasks that move data between hosts: always sent to one host's queue (`host.<name>`).

`farm.flow.pull_labels` runs where the dataset is to be built (the augmentation host):
it mirrors a labelImg folder from the label host, imports it, and packages it there.
`farm.flow.fetch_dataset` stages a packaged dataset on a host before a run needs it
(training fetches it anyway when it starts).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from farm.datasets import package as pkg, voc
from farm.remote import flow
from workers.app import app


def _mirror_name(host: str, remote_dir: str) -> str:
    return f"{host}-" + "-".join(p for p in Path(remote_dir).parts if p not in ("/", ".."))


@app.task(name="farm.flow.pull_labels")
def pull_labels(label_host: str, remote_dir: str, names: list[str], package: bool = True,
                valid_ratio: float = 0.2, network: list[int] | None = None,
                kind: str = "train") -> dict:
    """labelImg output on `label_host` -> YOLO labels here -> (a packaged dataset here:
    `kind` "train" to train on, "screens" whole screenshots to evaluate on)."""
    s = app.farm_settings
    name = _mirror_name(label_host, remote_dir)
    mirror = Path(s.data_dir) / "labels" / name
    with flow.connect(s, label_host) as src:
        pulled = flow.fetch_tree(src, remote_dir, mirror)
    imported = Path(s.data_dir) / "imports" / name
    fresh = imported.with_name(imported.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    report = voc.import_voc(mirror, names, fresh, strict=True)  # strict: all or nothing
    shutil.rmtree(imported, ignore_errors=True)  # derived from the mirror: rebuilt whole
    fresh.rename(imported)
    out = {"host": s.host_name, "pulled": dataclasses.asdict(pulled), "imported": str(imported),
           "converted": report.converted, "objects": report.objects}
    if not package:
        return out
    if kind == "screens":
        from farm.datasets.screens import package_screens
        result = package_screens([imported], flow.datasets_root(s), names=names)
    else:
        result = pkg.package([imported], flow.datasets_root(s), names=names,
                             valid_ratio=valid_ratio, network=tuple(network or (416, 416)))
    out.update(dataset_id=result.dataset_id, dataset=result.path,
               obj_data=f"{result.path}/obj.data", images=result.images)
    return out


@app.task(name="farm.flow.fetch_dataset")
def fetch_dataset(source_host: str, remote_dir: str) -> dict:
    """Fetch a packaged dataset from `source_host` into this host's datasets folder."""
    s = app.farm_settings
    with flow.connect(s, source_host) as src:
        got = flow.fetch_dataset(src, remote_dir, flow.datasets_root(s))
    return {"host": s.host_name, **dataclasses.asdict(got)}
