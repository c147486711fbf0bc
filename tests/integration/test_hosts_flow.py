"""Three hosts on one machine, joined only by SSH and Redis: the farm's cross-host data flow.

Each host is a real OpenSSH sshd on its own loopback port with its own host key, letting
in only its own unprivileged user, and a data folder of its own; each has its own real
Celery worker listening on its role queues and `host.<name>`, with that host's settings
(FARM_HOST_NAME, FARM_DATA_DIR). The files of one host reach another only through SFTP or
the tar stream (the workers never read another host's folder, though the disk is shared):
a worker finds them by the inventory, as on three machines.

    imglabeling (label)  --labelImg XML-->  augmentation (augment, cpu, eval)
    augmentation  --packaged dataset, by content-->  lily2 (gpu: trains)
    lily2  --checkpoints-->  augmentation (evaluates)  --best weights-->  the head (CLI)

The GPU is the only stand-in: lily2's `gpu` worker trains the micro net on the CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from farm.datasets.package import verify_dataset
from farm.runs.model import RunState
from farm.store import Store
from tests.conftest import wait_for
from tests.sshd import LoopbackSSHD, need_root_sshd
from workers.micro import draw_mark, micro_cfg

pytestmark = pytest.mark.integration

ROLES = {"imglabeling": ["label"], "augmentation": ["augment", "cpu", "eval"], "lily2": ["gpu"]}


class Host:
    """One pretend machine: a user, an sshd, a data folder."""

    def __init__(self, base: Path, name: str):
        self.name, self.user = name, f"farmt-{name}"[:32]
        self.root = base / name
        self.data = self.root / "data"
        self.data.mkdir(parents=True)
        if subprocess.run(["id", self.user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                            str(self.root), "--shell", "/bin/sh", self.user], check=True)
            subprocess.run(["usermod", "-p", "*", self.user], check=True)  # not locked
        shutil.chown(self.data, self.user)
        self.sshd = LoopbackSSHD(self.root / "sshd", user=self.user).start()

    @property
    def node(self) -> str:
        return f"{'gpu0' if 'gpu' in ROLES[self.name] else 'cpu'}@{self.name}"


@pytest.fixture
def hosts(farm, monkeypatch):
    """imglabeling, augmentation and lily2, an inventory naming them, and one worker each
    started by `start(name)` (so a test can take a host away and bring it back)."""
    need_root_sshd()
    base = Path(tempfile.mkdtemp(prefix="farm-hosts-", dir="/tmp"))
    base.chmod(0o755)  # each host's user must reach its own folder
    made: dict[str, Host] = {}
    try:
        for name in ROLES:
            made[name] = Host(base, name)
        known = base / "known_hosts"
        known.write_text("".join(h.sshd.known_hosts.read_text() for h in made.values()))
        inventory = base / "inventory.yaml"
        inventory.write_text(yaml.safe_dump({"hosts": {h.name: {
            "address": "127.0.0.1", "roles": ROLES[h.name], "data_dir": str(h.data),
            "gpus": 1 if "gpu" in ROLES[h.name] else 0,
            "ssh": {"user": h.user, "port": h.sshd.port, "key": str(h.sshd.user_key),
                    "known_hosts": str(known)}} for h in made.values()}}))
        monkeypatch.setenv("FARM_INVENTORY", str(inventory))

        def start(name: str):
            from farm.inventory import load_inventory
            plan = load_inventory(inventory).worker_plan(name)[0]
            h = made[name]
            return farm.worker(f"{plan.instance}-{name}", ",".join(plan.queues), 1, host=name,
                               env={"FARM_HOST_NAME": name, "FARM_DATA_DIR": str(h.data),
                                    "FARM_INVENTORY": str(inventory),
                                    "FARM_HOST_RETRY_DELAY": "1"})
        yield made, start
    finally:
        farm.stop()
        for h in made.values():
            h.sshd.stop()
            subprocess.run(["userdel", h.user], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _labelimg_folder(folder: Path, n: int, seed: int = 0, size: int = 64) -> None:
    """What labelImg leaves behind: images and one Pascal-VOC XML beside each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((size, size, 3)) * 60 + 70).astype(np.uint8)
        s = int(rng.integers(size // 6, size // 3))
        x, y = (int(v) for v in rng.integers(1, size - s - 1, 2))
        draw_mark(img, x, y, s, rng)
        cv2.imwrite(str(folder / f"shot{i:03d}.png"), img)
        (folder / f"shot{i:03d}.xml").write_text(
            f"<annotation><folder>close</folder><filename>shot{i:03d}.png</filename>"
            f"<size><width>{size}</width><height>{size}</height><depth>3</depth></size>"
            f"<object><name>close</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
            f"<xmax>{x + s + 1}</xmax><ymax>{y + s + 1}</ymax></bndbox></object></annotation>\n")


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from workers.cli import main
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_labels_to_dataset_to_training_to_evaluation_across_three_hosts(hosts, farm, tmp_path,
                                                                       capsys, darknet_bin):
    made, start = hosts
    label, aug, lily2 = made["imglabeling"], made["augmentation"], made["lily2"]
    for name in made:
        start(name)
    shots = label.data / "labelimg" / "close"
    _labelimg_folder(shots, 24)
    for p in shots.iterdir():
        shutil.chown(p, label.user)  # labelImg ran as that host's user
    names = tmp_path / "obj.names"
    names.write_text("close\n")

    # 1. labelImg output pulled from imglabeling, imported and packaged on augmentation
    code, out, err = _cli(capsys, "dataset", "pull-labels", f"imglabeling:{shots}",
                          "--names", str(names), "--on", "augmentation", "--network", "64x64")
    assert code == 0, err
    assert "pulled 48 files" in out and "24 images, 24 objects imported on augmentation" in out
    location = out.strip().splitlines()[-1]
    assert location.startswith(f"augmentation:{aug.data}/datasets/")
    aug_ds = Path(location.split(":", 1)[1]).parent
    assert verify_dataset(aug_ds)["counts"]["images"] == 24
    assert _files(aug.data / "labels" / f"imglabeling-{'-'.join(shots.parts[1:])}") == \
        _files(shots)

    # 1b. the same screenshots kept whole on imglabeling, as a screens set to score on
    code, out, err = _cli(capsys, "dataset", "pull-labels", f"imglabeling:{shots}",
                          "--names", str(names), "--on", "imglabeling", "--kind", "screens")
    assert code == 0, err
    assert re.search(r"^screens set \S+: 24 images$", out, re.M), out
    screens = out.strip().splitlines()[-1]
    assert screens.startswith(f"imglabeling:{label.data}/datasets/")
    screens_dir = Path(screens.split(":", 1)[1]).parent
    for wrong, says in ((f"imglabeling:{label.data}/nowhere", "no manifest.json there"),
                        (location, "is not a screens set (its manifest says kind train)")):
        code, out, err = _cli(capsys, "train", location, str(tmp_path / "micro.cfg"),
                              "--eval-screens", wrong)
        assert code == 2 and says in err, err  # refused at submit, nothing queued
    assert Store(farm.settings.effective_redis_url).runs.recent(1) == []

    # 2. trained on lily2, which fetches the dataset from augmentation by itself; scored
    #    on the screens too, which augmentation fetches from imglabeling to evaluate
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    code, out, err = _cli(capsys, "train", location, str(cfg), "--host", "lily2",
                          "--eval-every", "100", "--eval-screens", screens, "--wait")
    assert code == 0, err + out
    store = Store(farm.settings.effective_redis_url)
    run = store.runs.recent(1)[0]
    assert run.state is RunState.COMPLETED and run.queue == "host.lily2"
    assert {a.host for a in run.attempts} == {"lily2"}
    lily2_ds = lily2.data / "datasets" / aug_ds.name
    assert run.data == str(lily2_ds / "obj.data") and run.origin == "lily2"
    assert verify_dataset(lily2_ds)["id"] == aug_ds.name
    assert (lily2_ds / "train.txt").read_text().startswith(f"{lily2_ds}/")  # relocated
    assert all(str(lily2.data) in c.path for c in run.checkpoints)

    # 3. evaluated on augmentation, which pulled each checkpoint from lily2
    evals = wait_for(lambda: len(e := store.evaluations.all(run.id)) == 2 and e, 180, 0.2,
                     what="evaluations of iterations 100 and 200")
    assert [e.iteration for e in evals] == [100, 200]
    aug_screens = aug.data / "datasets" / screens_dir.name
    assert run.eval_screens == screens  # where the user's screens are, as given
    assert verify_dataset(aug_screens)["id"] == screens_dir.name
    for e in evals:
        assert e.error is None, e
        assert e.host == "augmentation" and e.worker.startswith("cpu-augmentation@")
        assert e.source.startswith(str(aug.data))  # the pulled copy, not lily2's file
        assert e.screens.error is None and e.screens.images == 24, e.screens
        assert e.screens.screens_id == screens_dir.name and e.screens.map is not None
    best = store.evaluations.best(run.id)
    assert best.best_weights.startswith(str(aug.data))
    # lily2 drops its pinned copies once evaluated, at each checkpoint and at the end: at
    # most the last two can still be waiting for their evaluation then
    assert len(list((lily2.data / "runs" / run.id / "eval" / "queue").glob("*.weights"))) <= 2

    # 4. visible from the head: logs from Redis, weights pulled from whichever host has them
    code, out, err = _cli(capsys, "logs", run.id)
    assert code == 0 and "avg" in out
    code, out, err = _cli(capsys, "fetch", run.id, "--best", "-o", str(tmp_path / "best.weights"))
    assert code == 0, err
    assert _sha256(tmp_path / "best.weights") == best.sha256
    assert f"augmentation:{best.best_weights}" in out
    code, out, err = _cli(capsys, "fetch", run.id, "--iteration", "200", "-o",
                          str(tmp_path / "200.weights"))
    assert code == 0 and "lily2:" in out, err
    assert (tmp_path / "200.weights").stat().st_size == (tmp_path / "best.weights").stat().st_size

    # 5. one annotation fixed on imglabeling: a new dataset, of which lily2 fetches only
    #    what changed (the image's label, and the three lists that name the new place)
    xml = shots / "shot005.xml"
    xmax = int(re.search(r"<xmax>(\d+)</xmax>", xml.read_text()).group(1))
    xml.write_text(xml.read_text().replace(f"<xmax>{xmax}<", f"<xmax>{xmax - 1}<"))
    code, out, err = _cli(capsys, "dataset", "pull-labels", f"imglabeling:{shots}",
                          "--names", str(names), "--on", "augmentation", "--network", "64x64")
    assert code == 0, err
    assert "pulled 1 files" in out
    new_location = out.strip().splitlines()[-1]
    assert new_location != location
    code, out, err = _cli(capsys, "dataset", "sync", new_location, "--to", "lily2")
    assert code == 0, err
    total = len(json.loads((aug_ds / "manifest.json").read_text())["files"])
    assert ": 4 files fetched" in out and f"{total - 1} linked" in out, out
    new_ds = lily2.data / "datasets" / Path(new_location.split(":", 1)[1]).parent.name
    verify_dataset(new_ds)
    code, out, err = _cli(capsys, "dataset", "sync", new_location, "--to", "lily2")
    assert code == 0 and "already there" in out, err


def test_a_host_that_goes_away_fails_its_tasks_and_the_work_resumes_when_it_returns(
        hosts, farm, tmp_path, capsys, darknet_bin):
    made, start = hosts
    aug, lily2 = made["augmentation"], made["lily2"]
    from farm.datasets.package import package
    from workers.micro import micro_dataset
    src = micro_dataset(tmp_path / "src", images=24, seed=4).parent
    ds = Path(package([src], aug.data / "datasets", names=["close"],
                      network=(64, 64)).path)
    cfg = micro_cfg(tmp_path / "micro.cfg", max_batches=300)
    # a host with no worker: refused at once, nothing sent
    code, out, err = _cli(capsys, "dataset", "sync", f"augmentation:{ds}", "--to", "lily2")
    assert code == 3 and "no worker listens on host.lily2" in err, err
    assert "farm hosts plan lily2" in err
    start("augmentation")
    farm.beat()  # resubmits runs whose worker vanished
    code, out, err = _cli(capsys, "train", f"augmentation:{ds}/obj.data", str(cfg),
                          "--host", "lily2", "--eval-every", "100")
    assert code == 0, err
    assert "no worker listens on host.lily2 now: the run waits queued" in err
    run_id = out.strip()
    store = Store(farm.settings.effective_redis_url)

    # augmentation's sshd goes away before lily2 fetches the dataset: the task fails with
    # the host's name, the run waits queued, and trains once augmentation is back
    aug.sshd.stop()
    start("lily2")
    waiting = wait_for(lambda: "waiting for a host" in (r := store.runs.load(run_id)).message
                       and r, 60, 0.2, what="the run to wait for augmentation")
    assert waiting.state is RunState.QUEUED and not waiting.attempts
    assert "augmentation did not answer SSH" in waiting.message
    assert "farm hosts check augmentation" in waiting.message
    from celery.result import AsyncResult
    from workers.app import app
    assert wait_for(lambda: AsyncResult(waiting.task_id, app=app).state == "RETRY", 30, 0.2,
                    what="the task to be retried")
    aug.sshd.start()
    wait_for(lambda: any(c.iteration >= 100 for c in store.runs.load(run_id).checkpoints),
             180, 0.2, what="lily2 to train past iteration 100")

    # lily2 goes away mid-training (its worker and its sshd): evaluation of its
    # checkpoints waits for it, and the run resumes on lily2 when it comes back
    os.killpg(farm.procs["gpu0-lily2"].pid, signal.SIGKILL)
    lily2.sshd.stop()
    at = store.runs.load(run_id).last_iteration
    wait_for(lambda: "resubmitted" in store.runs.load(run_id).message, 60, 0.2,
             what="the reaper to resubmit the run")
    assert store.runs.load(run_id).queue == "host.lily2"
    lily2.sshd.start()
    start("lily2")
    run = wait_for(lambda: (r := store.runs.load(run_id)).state.finished and r, 240, 0.2,
                   what="the run to finish on lily2")
    assert run.state is RunState.COMPLETED, run.message
    lost = [i for i, a in enumerate(run.attempts) if a.outcome.value == "lost"]
    assert len(lost) == 1 and run.attempts[-1].outcome.value == "completed", run.attempts
    after = run.attempts[lost[0] + 1]  # from its newest good checkpoint
    assert 100 <= after.start_iteration <= at, (after.start_iteration, at)
    assert {a.host for a in run.attempts} == {"lily2"}
    evals = wait_for(lambda: {100, 200, 300} <= {e.iteration for e in
                                                 store.evaluations.all(run_id)}
                     and store.evaluations.all(run_id), 180, 0.3, what="all evaluations")
    assert all(e.error is None and e.host == "augmentation" for e in evals), evals


RECIPE_SWEEP = """
base:
  recipe:
    synth: {n: 24, seed: 2, canvas: [64, 64], mark_px: [12, 24], negatives: 0.05}
    package: {valid_ratio: 0.25, network: [64, 64], seed: 1}
  cfg: micro.cfg
parameters:
  learning_rate: [0.004]
budget: {iterations: 100}
eval_every: 100
"""


def test_a_recipe_sweep_builds_on_augmentation_trains_on_lily2_and_exports_at_the_head(
        hosts, farm, tmp_path, capsys, darknet_bin):
    made, start = hosts
    aug, lily2 = made["augmentation"], made["lily2"]
    start("augmentation")  # builds recipes, runs the sweep's ticks, evaluates
    start("lily2")
    # screens kept on lily2 (packaged there by its user), scored where trials are evaluated
    _labelimg_folder(tmp_path / "shots", 6, seed=5)
    (tmp_path / "obj.names").write_text("close\n")
    code, out, err = _cli(capsys, "dataset", "package", "--kind", "screens",
                          str(tmp_path / "shots"), "--names", str(tmp_path / "obj.names"),
                          "--root", str(lily2.data / "datasets"))
    assert code == 0, err
    screens = Path(out.strip().splitlines()[-1]).parent
    assert screens.parent == lily2.data / "datasets" and (screens / "manifest.json").is_file()
    spec = tmp_path / "sweep.yaml"
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    spec.write_text(RECIPE_SWEEP.lstrip("\n") + "objective: screens_map50\n"
                    "eval: {screens: 'lily2:/nowhere'}\n")
    code, out, err = _cli(capsys, "sweep", "submit", str(spec))
    assert code == 2 and "lily2:/nowhere is not a packaged dataset: no manifest.json" in err
    spec.write_text(RECIPE_SWEEP.lstrip("\n") + "objective: screens_map50\n"
                    f"eval: {{screens: 'lily2:{screens}'}}\n")
    code, out, err = _cli(capsys, "sweep", "submit", str(spec), "--wait")
    assert code == 0, err + out
    sweep_id = out.split()[0]
    store = Store(farm.settings.effective_redis_url)
    (trial,) = store.sweeps.trials(sweep_id)
    run = store.runs.load(trial.run_id)
    assert run.state is RunState.COMPLETED, run.message
    ds_id = Path(run.data).parent.name
    assert (aug.data / "datasets" / ds_id / "manifest.json").is_file()  # built there
    assert run.data == str(lily2.data / "datasets" / ds_id / "obj.data")  # fetched here
    assert {a.host for a in run.attempts} == {"lily2"}
    best = wait_for(lambda: store.evaluations.best(run.id), 60, 0.2,
                    what="the trial's evaluation")
    assert run.eval_screens == f"lily2:{screens}/obj.data" and run.rank_by == "screens_map50"
    assert best.screens.error is None and best.screens.images == 6, best.screens
    assert (aug.data / "datasets" / screens.name / "manifest.json").is_file()  # fetched there
    bundle = tmp_path / "bundle"
    code, out, err = _cli(capsys, "sweep", "export", sweep_id, "-o", str(bundle))
    assert code == 0, err
    result = json.loads((bundle / "result.json").read_text())
    assert result["weights_sha256"] == store.evaluations.best(run.id).sha256
    assert (bundle / "obj.names").read_text() == "close\n"
    assert "names = obj.names" in (bundle / "obj.data").read_text()
