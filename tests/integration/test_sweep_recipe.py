"""Sweeps whose dataset is a recipe: built by the farm, once per distinct recipe.

End to end on real workers (a `gpu` worker, an `augment`+`eval` worker, the `cpu`
controller of test_sweep.py) and Debian's darknet; then the build-once guards against a
real redis-server, with `advance()` given recording enqueuers and `build_recipe` run in
this process (it is what the `farm.dataset.synth_recipe` task calls).
"""
from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from farm.runs.model import RunState
from farm.store import Store
from farm.sweeps import builds as bld
from farm.sweeps import controller as ctl
from farm.sweeps.builds import build_recipe
from farm.sweeps.model import SweepState
from farm.sweeps.service import advance, leaderboard_of, submit_sweep
from farm.sweeps.spec import load_spec
from tests.conftest import wait_for
from tests.integration.test_sweep import cli, controller, wait_sweep  # noqa: F401 (fixture)
from workers.micro import micro_cfg

pytestmark = pytest.mark.integration

RECIPE = """
base:
  recipe:
    synth: {n: 20, seed: 1, canvas: [64, 64], mark_px: [12, 24], marks: [1, 2],
            negatives: 0.05}
    package: {valid_ratio: 0.25, network: [64, 64], seed: 1}
  cfg: micro.cfg
"""

#: random search, seed 4: trials 0 and 2 draw blur 0, trial 1 draws 0.5
THREE_TRIALS = RECIPE + """
parameters:
  synth.blur: [0.0, 0.5]
search: random
trials: 3
seed: 4
budget: {iterations: 60}
eval_every: 60
policy: {burn_in_min: 0}
"""


def write_spec(folder: Path, body: str) -> Path:
    micro_cfg(folder / "micro.cfg", max_batches=1000, learning_rate=0.004)
    path = folder / "sweep.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def test_a_recipe_sweep_builds_two_datasets_for_three_trials_and_ranks_them_by_map(
        farm, controller, capsys, darknet_bin, tmp_path):  # noqa: F811 (fixture)
    spec_path = write_spec(tmp_path, THREE_TRIALS)
    planned = ctl.expand(load_spec(spec_path))
    assert [t.params["synth.blur"] for t in planned] == ["0", "0.5", "0"]
    farm.worker("gpu1", "gpu")
    farm.worker("aux1", "augment,eval")
    controller.start()
    code, out, err = cli(capsys, "sweep", "submit", str(spec_path))
    assert code == 0, err
    sweep_id = out.strip()
    store = Store(farm.settings.effective_redis_url)
    sw = wait_sweep(store, sweep_id, timeout=120)
    assert sw.state is SweepState.DONE, sw.message
    trials = store.sweeps.trials(sweep_id)
    runs = {t.index: store.runs.load(t.run_id) for t in trials}
    assert all(r.state is RunState.COMPLETED for r in runs.values()), \
        [(r.id, r.state, r.message) for r in runs.values()]
    wait_for(lambda: all(store.evaluations.all(r.id) for r in runs.values()), 60, 0.2,
             what="every trial's final checkpoint evaluated")

    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--json")
    board = {r["trial"]: r for r in json.loads(out)["leaderboard"]}
    # two recipes, two datasets: trials 0 and 2 share one, trial 1 has its own
    assert board[0]["dataset"] == board[2]["dataset"] != board[1]["dataset"]
    assert board[0]["recipe"] == board[2]["recipe"] != board[1]["recipe"]
    datasets = Path(farm.settings.data_dir) / "datasets"
    assert sorted(p.name for p in datasets.iterdir() if not p.name.startswith(".")) == \
        sorted({board[0]["dataset"], board[1]["dataset"]})
    for t in trials:  # each trial trained on its own recipe's dataset
        assert runs[t.index].data == str(datasets / board[t.index]["dataset"] / "obj.data")
        assert board[t.index]["params"]["synth.blur"] == t.params["synth.blur"]
    # built once each: one attempt per recipe, one task per recipe on the augment worker
    for key in {t.recipe_key for t in trials}:
        rec = store.recipes.load(key)
        assert rec["state"] == "ready" and rec["attempts"] == "1", rec
    assert farm.log("aux1").count("Task farm.dataset.synth_recipe") == 2 * 2  # got, done
    # ranked by the farm's evaluations (mAP@0.50), every trial with a value
    assert all(r["best"] is not None and r["state"] == "completed" for r in board.values())
    code, out, _ = cli(capsys, "sweep", "show", sweep_id)
    assert "DATASET" in out and board[1]["dataset"] in out and "synth.blur=0.5" in out


# -- build once, without workers: real Redis, recording enqueuers -----------------------


@pytest.fixture
def recipe_sweep(farm_settings, tmp_path):
    """Sweeps to submit: by default 4 trials over 2 recipes (synth.blur) taking turns,
    concurrency 1 (so the next two trials' datasets are wanted: both recipes)."""
    store = Store(farm_settings.effective_redis_url)

    def submit(body: str = RECIPE + "parameters:\n  learning_rate: [0.001, 0.002]\n"
                                    "  synth.blur: [0.0, 0.5]\n"):
        sw = submit_sweep(store, farm_settings, load_spec(write_spec(tmp_path, body)))
        return sw.id
    return store, submit


class Recorder:
    def __init__(self):
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, key: str, *rest) -> str:
        with self.lock:
            self.sent.append(key)
        return f"task-{len(self.sent)}"


def test_concurrent_and_restarted_controllers_send_each_build_once(recipe_sweep,
                                                                    farm_settings):
    store, submit = recipe_sweep
    sweep_id = submit()
    builds, runs = Recorder(), Recorder()

    def tick():
        advance(store, farm_settings, sweep_id, enqueue=runs, build=builds, wait=5.0)
    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = {t.recipe_key for t in store.sweeps.trials(sweep_id)}
    assert len(keys) == 2 and sorted(builds.sent) == sorted(keys)  # one message per recipe
    assert runs.sent == []  # no dataset ready: no trial may start
    # a second sweep with the same recipes (or a controller restarted) sends none again
    other = submit()
    for _ in range(3):
        tick()
        advance(store, farm_settings, other, enqueue=runs, build=builds)
    assert sorted(builds.sent) == sorted(keys)
    _, _, rows = leaderboard_of(store, sweep_id)
    assert {r.state for r in rows} == {"building"}
    assert all("waiting for dataset r" in r.note and "queued for an augment worker"
               in r.note for r in rows)


def test_two_builders_at_once_build_once_and_a_third_does_nothing(recipe_sweep,
                                                                   farm_settings):
    store, submit = recipe_sweep
    sweep_id = submit()
    key = store.sweeps.trials(sweep_id)[0].recipe_key
    results: list[dict] = []

    def build(worker: str):
        results.append(build_recipe(store, farm_settings.data_dir, key, worker=worker))
    threads = [threading.Thread(target=build, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec = wait_for(lambda: (r := store.recipes.load(key))["state"] == "ready" and r,
                   30, what="the build to end")
    assert rec["attempts"] == "1", "one builder held the lease, the other left it"
    again = build_recipe(store, farm_settings.data_dir, key, worker="w3")
    assert again["attempts"] == "1" and again["dataset_id"] == rec["dataset_id"]
    assert Path(rec["data"]).is_file() and Path(rec["data"]).parent.name == rec["dataset_id"]
    assert not any((Path(farm_settings.data_dir) / "recipes").iterdir())  # work removed
    # the trials of that recipe now start, on its dataset; the others still wait
    runs = Recorder()
    tick = advance(store, farm_settings, sweep_id, enqueue=runs, build=Recorder())
    [(index, run_id)] = tick.started
    assert store.runs.load(run_id).data == rec["data"]
    assert store.sweeps.trials(sweep_id)[index].recipe_key == key


def test_a_builder_that_died_is_retried_then_its_trials_fail_and_the_sweep_ends(
        recipe_sweep, farm_settings):
    store, submit = recipe_sweep
    sweep_id = submit(RECIPE + "parameters: {learning_rate: [0.001, 0.002]}\n")
    [key] = {t.recipe_key for t in store.sweeps.trials(sweep_id)}
    recipes, builds = store.recipes, Recorder()
    clock = [1000.0]
    advance(store, farm_settings, sweep_id, enqueue=Recorder(), build=builds,
            now=lambda: clock[0])
    assert builds.sent == [key]
    for attempt in (1, 2):  # a worker takes it and dies: lease gone, state "building"
        recipes.attempt(key)
        recipes.update(key, state="building", worker=f"dead{attempt}", started_at=clock[0])
        clock[0] += 1
        tick = advance(store, farm_settings, sweep_id, enqueue=Recorder(), build=builds,
                       now=lambda: clock[0])
        assert tick.builds == [(key, "retried" if attempt == 1 else "failed")]
    assert builds.sent == [key, key]
    advance(store, farm_settings, sweep_id, enqueue=Recorder(), build=builds,
            now=lambda: clock[0])
    sw = store.sweeps.load(sweep_id)
    assert sw.state is SweepState.DONE and "2 failed" in sw.message
    for t in store.sweeps.trials(sweep_id):
        assert t.error.startswith(f"dataset {key} could not be built: the worker building "
                                  f"it (dead2) stopped before the end, 2 times")


def test_a_claim_whose_controller_died_before_sending_is_sent_after_the_grace(
        recipe_sweep, farm_settings):
    store, submit = recipe_sweep
    sweep_id = submit(RECIPE + "parameters: {learning_rate: [0.001]}\n")
    [key] = {t.recipe_key for t in store.sweeps.trials(sweep_id)}
    recipes = store.recipes
    assert recipes.claim(key, 1000.0)  # ... and the controller was killed here
    builds = Recorder()
    tick = advance(store, farm_settings, sweep_id, enqueue=Recorder(), build=builds,
                   now=lambda: 1000.0 + bld.CLAIM_GRACE / 2)
    assert tick.builds == [] and builds.sent == []  # it may still be sending
    tick = advance(store, farm_settings, sweep_id, enqueue=Recorder(), build=builds,
                   now=lambda: 1000.0 + bld.CLAIM_GRACE + 1)
    assert tick.builds == [(key, "resent")] and builds.sent == [key]


def test_a_recipe_that_cannot_be_built_fails_its_trials_with_the_builds_message(
        recipe_sweep, farm_settings, tmp_path):
    store, submit = recipe_sweep
    (tmp_path / "empty-backgrounds").mkdir()
    sweep_id = submit(RECIPE.replace("negatives: 0.05}", "negatives: 0.05, backgrounds: "
                                     "[empty-backgrounds]}")
                      + "parameters: {learning_rate: [0.001, 0.002]}\n")
    [key] = {t.recipe_key for t in store.sweeps.trials(sweep_id)}
    rec = build_recipe(store, farm_settings.data_dir, key, worker="w1")
    assert rec["state"] == "failed" and "the background folder holds no images" in rec["error"]
    runs = Recorder()
    advance(store, farm_settings, sweep_id, enqueue=runs, build=Recorder())
    assert runs.sent == []
    sw = store.sweeps.load(sweep_id)
    assert sw.state is SweepState.DONE and sw.message.startswith("2 failed")
    _, _, rows = leaderboard_of(store, sweep_id)
    for r in rows:
        assert r.state == "failed" and "holds no images" in r.note and r.dataset is None
