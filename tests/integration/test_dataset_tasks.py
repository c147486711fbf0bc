"""Dataset steps as Celery tasks on real `augment`/`cpu` worker processes.

A synthesis split into chunks over two augment workers gives byte for byte what one
process gives (every image is seeded from (seed, index)); packaging runs on a cpu worker
and lints the result, and a bad package leaves nothing behind.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from farm.datasets.synth import SynthSpec, synthesize

pytestmark = pytest.mark.integration


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_chunked_synthesis_on_two_workers_equals_one_process(farm, tmp_path):
    farm.worker("aug1", "augment")
    farm.worker("aug2", "augment")
    from workers.tasks.dataset import synth_group
    spec = SynthSpec(canvas=(128, 128), mark_px=(16, 32)).to_dict()
    result = synth_group(spec, str(tmp_path / "farm-made"), 24, seed=7, chunk=5).apply_async()
    chunks = result.get(timeout=120)
    assert sum(c["count"] for c in chunks) == 24 and len(chunks) == 5
    synthesize(SynthSpec.from_dict(spec), tmp_path / "local", 24, seed=7)
    farm_made, local = digest(tmp_path / "farm-made"), digest(tmp_path / "local")
    assert len([k for k in local if k.endswith(".jpg")]) == 24
    assert farm_made == local
    # the chunks were spread: each worker made some
    assert "farm.dataset.synth_chunk" in farm.log("aug1")
    assert "farm.dataset.synth_chunk" in farm.log("aug2")


def test_packaging_task_on_a_cpu_worker_builds_a_linted_dataset(farm, tmp_path):
    farm.worker("cpu1", "cpu")
    synthesize(SynthSpec(canvas=(128, 128), mark_px=(16, 32)), tmp_path / "src", 12, seed=1)
    from workers.tasks.dataset import package
    out = package.delay([str(tmp_path / "src")], str(tmp_path / "datasets"),
                        network=[128, 128]).get(timeout=120)
    dataset = Path(out["path"])
    assert dataset.parent == tmp_path / "datasets" and out["images"] == 12
    assert (dataset / "obj.data").exists() and (dataset / "manifest.json").exists()
    again = package.delay([str(tmp_path / "src")], str(tmp_path / "datasets"),
                          network=[128, 128]).get(timeout=120)
    assert again["dataset_id"] == out["dataset_id"]  # content-addressed
    (tmp_path / "src" / "labels").joinpath(sorted(
        (tmp_path / "src" / "labels").iterdir())[0].name).write_text("0 0.5 0.5 1.7 0.2\n")
    with pytest.raises(Exception) as e:
        package.delay([str(tmp_path / "src")], str(tmp_path / "other"),
                      network=[128, 128]).get(timeout=120)
    assert "outside" in str(e.value) or "coordinate" in str(e.value).lower()
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
