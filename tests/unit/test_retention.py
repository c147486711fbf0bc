"""Retention and the free-space thresholds: what a run keeps, what goes, when to stop."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm.errors import ConfigError
from farm.gc import _once_per_inode
from farm.runs import disk
from farm.runs.model import Checkpoint, Run
from farm.runs.retention import (Retention, Waste, backup_waste, checkpoint_waste,
                                 kept_checkpoints, pin_waste, remove, run_waste)
from farm.settings import Settings


def run_with(folder: Path, its: list[tuple[int, bool, float]]) -> Run:
    """A run whose checkpoints (iteration, finite, saved_at) have files in folder."""
    run = Run(id="r", data="", cfg="", weights=None, base_dir="", overrides={}, policy={},
              host="h", created_at=0, max_batches=1000)
    folder.mkdir(parents=True, exist_ok=True)
    for it, finite, at in its:
        src = f"/b/net_{it}.weights"
        path = str(folder / f"iter-{it:07d}.weights") if finite else src
        if finite:
            Path(path).write_bytes(b"w" * it)
            run.good_checkpoint = path
        run.checkpoints.append(Checkpoint(it, path, src, finite, 1, at))
    return run


def test_the_newest_good_checkpoint_and_keep_more_by_save_time_are_kept(tmp_path):
    # a restart resumed at 200 after a crash: 300 (older) is no longer the newest
    run = run_with(tmp_path / "c", [(100, True, 1), (300, True, 2), (350, False, 3),
                                    (250, True, 4)])
    names = lambda keep: sorted(Path(p).name for p in kept_checkpoints(run, keep))
    assert names(0) == ["iter-0000250.weights"]
    assert names(1) == ["iter-0000250.weights", "iter-0000300.weights"]
    assert names(9) == ["iter-0000100.weights", "iter-0000250.weights", "iter-0000300.weights"]
    (tmp_path / "c" / "iter-0000400.part").write_bytes(b"cut")
    waste = checkpoint_waste(run, tmp_path / "c", 1)
    assert [(w.path.name, w.bytes) for w in waste] == [("iter-0000100.weights", 100),
                                                       ("iter-0000400.part", 3)]
    assert remove(waste) == 103 and remove(waste) == 0  # gone already: nothing freed
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == \
        ["iter-0000250.weights", "iter-0000300.weights"]


def test_a_finished_runs_waste_spares_best_logs_and_pins_still_waiting(tmp_path):
    folder = tmp_path / "r"
    run = run_with(folder / "checkpoints", [(100, True, 1), (200, True, 2)])
    for name in ("net.backup", "net_100.weights", "net_final.weights"):
        (folder / "attempt-1" / "backup").mkdir(parents=True, exist_ok=True)
        (folder / "attempt-1" / "backup" / name).write_bytes(b"d" * 10)
    (folder / "attempt-1" / "darknet.log").write_text("log")
    (folder / "best.weights").write_bytes(b"b")
    queue = folder / "eval" / "queue"
    queue.mkdir(parents=True)
    for it in (100, 200):
        os.link(folder / "checkpoints" / f"iter-{it:07d}.weights",
                queue / f"iter-{it:07d}-abcdef.weights")
    waste = run_waste(run, folder, 0, evaluated={100})
    assert sorted(str(w.path.relative_to(folder)) for w in waste) == [
        "attempt-1/backup/net.backup", "attempt-1/backup/net_100.weights",
        "attempt-1/backup/net_final.weights", "checkpoints/iter-0000100.weights",
        "eval/queue/iter-0000100-abcdef.weights"]
    # the checkpoint at 100 and its pin are one file: its bytes count once
    counted = {str(w.path.relative_to(folder)): w.bytes for w in _once_per_inode(waste)}
    assert counted["checkpoints/iter-0000100.weights"] + \
        counted["eval/queue/iter-0000100-abcdef.weights"] == 100
    # the pin of 200 alone frees nothing: its checkpoint is kept
    only_pin = [Waste(queue / "iter-0000200-abcdef.weights", 200, "pin")]
    assert _once_per_inode(only_pin)[0].bytes == 0
    assert pin_waste(folder, {300}) == [] and backup_waste(folder / "nowhere") == []


def test_take_moves_darknets_file_with_retention_and_copies_without(tmp_path):
    src = tmp_path / "backup" / "net.backup"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    Retention(on=False).take(src, tmp_path / "c" / "iter-1.weights")
    assert src.exists() and (tmp_path / "c" / "iter-1.weights").read_bytes() == b"weights"
    Retention().take(src, tmp_path / "c" / "iter-2.weights")
    assert not src.exists() and (tmp_path / "c" / "iter-2.weights").read_bytes() == b"weights"


def test_an_attempt_starts_with_room_for_twice_the_files_it_trains_on(tmp_path):
    need = disk.Need(weights=257_717_640, margin=512 << 20)  # yolov4, the default margin
    assert need.to_train == 3 * 257_717_640 + (512 << 20)
    assert need.to_start == need.to_train + 3 * 257_717_640
    free = disk.free_bytes(tmp_path / "not" / "made" / "yet")  # its nearest parent's
    assert disk.shortage(tmp_path, free // 2, "x") is None
    short = disk.shortage(tmp_path, free * 2, "6 weights files")
    assert short.needed == free * 2 and str(tmp_path) in str(short)
    assert f"needs {free * 2} " in str(short) and "6 weights files" in str(short)


@pytest.mark.parametrize("bad", [{"retention": 2}, {"keep_checkpoints": -1},
                                 {"disk_margin": -1}, {"disk_check_interval": 0},
                                 {"disk_retry_delay": 0}])
def test_bad_retention_and_disk_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        Settings(**bad).validate()
