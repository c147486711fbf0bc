"""The sweep controller's decisions as pure functions, on made-up trials and curves."""
from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from farm.errors import BadInput
from farm.runs.model import Attempt, Outcome, Run, RunState
from farm.sweeps import controller as ctl
from farm.sweeps.controller import TrialView
from farm.sweeps.model import Trial, TrialState
from farm.sweeps.spec import load_spec
from workers.micro import micro_cfg

S = TrialState


@pytest.fixture
def spec_file(tmp_path):
    micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    (tmp_path / "obj.data").write_text("classes = 1\n")

    def write(body: str):
        path = tmp_path / "sweep.yaml"
        path.write_text("base: {data: obj.data, cfg: micro.cfg}\n" + textwrap.dedent(body))
        return load_spec(path)
    return write


RANDOM = """
parameters:
  learning_rate: {log_uniform: [0.0001, 0.01]}
  burn_in: {uniform: [0, 100]}
  batch/subdivisions: ["8/2", "8/4"]
trials: 6
seed: 7
"""


def test_random_expansion_is_the_same_for_the_same_seed_and_stays_in_range(spec_file):
    spec = spec_file(RANDOM)
    first, again = ctl.expand(spec), ctl.expand(spec)
    assert [t.params for t in first] == [t.params for t in again]
    assert [t.index for t in first] == list(range(6))
    other = ctl.expand(replace(spec, seed=8))
    assert [t.params for t in other] != [t.params for t in first]
    for t in first:
        assert 0.0001 <= float(t.params["learning_rate"]) <= 0.01
        assert t.overrides["burn_in"].isdigit() and 0 <= int(t.overrides["burn_in"]) <= 100
        assert (t.overrides["batch"], t.overrides["subdivisions"]) in (("8", "2"), ("8", "4"))


def test_grid_expansion_follows_the_written_order_and_applies_the_budget(spec_file):
    spec = spec_file("""
    parameters:
      learning_rate: [0.001, 0.002]
      width/height: [64, "96/64"]
    budget: {iterations: 100}
    """)
    trials = ctl.plan(spec)
    assert [t.params for t in trials] == [
        {"learning_rate": "0.001", "width/height": "64/64"},
        {"learning_rate": "0.001", "width/height": "96/64"},
        {"learning_rate": "0.002", "width/height": "64/64"},
        {"learning_rate": "0.002", "width/height": "96/64"}]
    assert trials[1].overrides == {"learning_rate": "0.001", "width": "96", "height": "64",
                                   "max_batches": "100", "steps": "80,90"}


def test_plan_refuses_a_trial_darknet_would_refuse(spec_file):
    spec = spec_file("""
    parameters:
      learning_rate: [0.001]
      batch/subdivisions: ["1/1"]
    """)
    with pytest.raises(BadInput) as e:
        ctl.plan(spec)
    assert "trial 0 (learning_rate=0.001 batch/subdivisions=1/1) would be refused" in str(e.value)
    assert "test-time setting" in str(e.value)


def test_plan_checks_each_shape_once_and_each_learning_rate_by_its_value(spec_file,
                                                                        monkeypatch):
    """2000 trials of a random search over the rate and two batch shapes: two cfg checks,
    and a bad rate is still refused at its own trial, in the words check_cfg uses."""
    calls = []
    real = ctl.check_cfg
    monkeypatch.setattr(ctl, "check_cfg", lambda cfg, **kw: calls.append(1) or real(cfg, **kw))
    spec = spec_file("""
    parameters:
      learning_rate: {log_uniform: [0.0001, 0.01]}
      batch/subdivisions: ["8/2", "8/4"]
    trials: 2000
    seed: 7
    """)
    trials = ctl.plan(spec)
    assert len(trials) == 2000 and len(calls) == 2
    assert len({t.params["learning_rate"] for t in trials}) > 1500
    grid = spec_file("""
    parameters:
      learning_rate: [0.001, 0.002, 0.003]
    """)  # the spec's own check refuses -0.5: a value only a bug in it would let through
    grid = replace(grid, parameters=[replace(grid.parameters[0],
                                             values=("0.001", "0.002", "-0.5"))])
    with pytest.raises(BadInput) as e:
        ctl.plan(grid)
    whole = [f.reason for f in real(_with(grid, "-0.5"), training=True) if f.severity == "error"]
    assert f"trial 2 (learning_rate=-0.5) would be refused: {whole[0]}" in str(e.value)


def _with(spec, rate: str):
    from farm.darknet.cfg import Cfg
    cfg = Cfg.load(spec.cfg)
    cfg.set_net("learning_rate", rate)
    return cfg


def v(index, state=S.RUNNING, iteration=0, curve=(), maps=(), **kw) -> TrialView:
    return TrialView(index=index, params={"learning_rate": str(index)}, state=state,
                     run_id=f"r{index}" if state is not S.PENDING else None,
                     iteration=iteration, curve=tuple(curve), maps=tuple(maps), **kw)


def test_next_to_start_fills_free_places_in_trial_order():
    views = [v(0, S.RUNNING), v(1, S.COMPLETED), v(2, S.PENDING), v(3, S.PENDING),
             v(4, S.PENDING)]
    assert ctl.next_to_start(views, concurrency=3) == [2, 3]
    assert ctl.next_to_start(views, concurrency=1) == []
    queued = [v(0, S.QUEUED), v(1, S.STOPPING), v(2, S.PENDING)]
    assert ctl.next_to_start(queued, concurrency=2) == []  # both still hold a GPU
    assert ctl.finished([v(0, S.COMPLETED), v(1, S.STOPPED), v(2, S.FAILED)])
    assert not ctl.finished([v(0, S.COMPLETED), v(1, S.PENDING)])


LOSS = """
parameters: {learning_rate: [0.001, 0.002, 0.004, 0.008]}
objective: min_avg_loss
early_stopping: {median: {grace: 50, min_trials: 2}}
"""


def loss_curve(level, until):
    return [(i, level + 100.0 / i) for i in range(10, until + 1, 10)]


def test_the_median_rule_stops_a_trial_worse_than_the_others_at_the_same_iteration(spec_file):
    spec = spec_file(LOSS)
    views = [v(0, S.COMPLETED, 200, loss_curve(1.0, 200)),
             v(1, S.COMPLETED, 200, loss_curve(1.2, 200)),
             v(2, S.RUNNING, 60, loss_curve(3.0, 60)),   # worse than both at 60
             v(3, S.RUNNING, 60, loss_curve(0.5, 60))]   # better than both
    [stop] = ctl.decide_stops(spec, views, now=0)
    assert (stop.index, stop.run_id) == (2, "r2")
    assert "avg loss 4.667 at iteration 60 is worse than the median 2.667" in stop.reason
    assert "of 3 other trial(s) there (median rule, grace 50)" in stop.reason


def test_the_median_rule_waits_for_the_grace_period_and_enough_other_trials(spec_file):
    spec = spec_file(LOSS)
    early = [v(0, S.COMPLETED, 200, loss_curve(1.0, 200)),
             v(1, S.COMPLETED, 200, loss_curve(1.2, 200)),
             v(2, S.RUNNING, 40, loss_curve(3.0, 40))]
    assert ctl.decide_stops(spec, early, now=0) == []           # before grace
    alone = [v(0, S.COMPLETED, 200, loss_curve(1.0, 200)),
             v(1, S.RUNNING, 60, loss_curve(1.2, 40)),          # has not reached 60... yet
             v(2, S.RUNNING, 70, loss_curve(3.0, 70))]
    alone[1] = replace(alone[1], iteration=50)
    assert ctl.decide_stops(spec, alone, now=0) == []           # one other at 70 < min_trials


def test_the_median_rule_on_map_stops_the_lower_map(spec_file):
    spec = spec_file("""
    parameters: {learning_rate: [0.001, 0.002, 0.004]}
    early_stopping: {median: {grace: 100, min_trials: 2}}
    """)
    views = [v(0, S.COMPLETED, 300, [(100, 0.40), (200, 0.70), (300, 0.80)]),
             v(1, S.COMPLETED, 300, [(100, 0.30), (200, 0.60), (300, 0.75)]),
             v(2, S.RUNNING, 200, [(100, 0.10), (200, 0.20)])]
    [stop] = ctl.decide_stops(spec, views, now=0)
    assert "mAP@0.50 20.00 % at iteration 200 is worse than the median 65.00 %" in stop.reason


def test_the_zero_map_rule_stops_a_trial_still_at_zero_after_n_iterations(spec_file):
    spec = spec_file("""
    parameters: {learning_rate: [0.001, 0.002, 0.004]}
    early_stopping: {zero_map_after: 1000}
    """)
    views = [v(0, S.RUNNING, 1100, maps=[(500, 0.0), (1000, 0.003)]),  # chance level
             v(1, S.RUNNING, 1100, maps=[(500, 0.0), (1000, 0.01)]),   # learning
             v(2, S.RUNNING, 1100, maps=[(500, 0.0)]),     # no evaluation after 1000 yet
             v(3, S.RUNNING, 900, maps=[(900, 0.0)])]
    [stop] = ctl.decide_stops(spec, views, now=0)
    assert stop.index == 0
    assert stop.reason == "mAP@0.50 still 0.30 % (under 1 %) at iteration 1000 " \
                          "(early_stopping.zero_map_after: 1000)"


def test_the_wall_time_budget_stops_a_trial_and_says_so(spec_file):
    spec = spec_file("parameters: {learning_rate: [0.001]}\nbudget: {wall_time: 1m}\n")
    views = [v(0, S.RUNNING, 30, started_at=100.0), v(1, S.QUEUED, started_at=0.0)]
    [stop] = ctl.decide_stops(spec, views, now=170.0)
    assert stop.index == 0 and "wall-time budget used: 70 s of 60 s" in stop.reason
    assert ctl.decide_stops(spec, views, now=150.0) == []


def test_only_running_trials_are_stopped(spec_file):
    spec = spec_file(LOSS)
    views = [v(0, S.COMPLETED, 200, loss_curve(1.0, 200)),
             v(1, S.COMPLETED, 200, loss_curve(1.2, 200)),
             v(2, S.STOPPING, 60, loss_curve(3.0, 60)),
             v(3, S.COMPLETED, 200, loss_curve(9.0, 200))]
    assert ctl.decide_stops(spec, views, now=0) == []


def test_the_leaderboard_ranks_by_objective_and_counts_restarts(spec_file):
    spec = spec_file(LOSS)
    views = [v(0, S.COMPLETED, 200, [(200, 1.5)], attempts=1, started_at=0, ended_at=10),
             v(1, S.STOPPED, 60, [(60, 2.5)], attempts=1, stop_reason="median",
               started_at=0, ended_at=5),
             v(2, S.COMPLETED, 200, [(150, 1.1), (200, 1.2)], attempts=3, divergences=2,
               started_at=0, ended_at=30),
             v(3, S.PENDING)]
    rows = ctl.leaderboard(spec, views, now=100)
    assert [r.trial for r in rows] == [2, 0, 1, 3]
    assert [r.rank for r in rows] == [1, 2, 3, None]
    top = rows[0]
    assert (top.best, top.best_iteration, top.restarts, top.divergences) == (1.1, 150, 2, 2)
    assert top.wall_time == 30 and rows[2].note == "median" and rows[3].wall_time is None
    late = ctl.leaderboard(spec, [v(0, S.COMPLETED, 200, [(200, 1.0)], stop_reason="median")], 0)
    assert late[0].note == "ended before the stop took effect (stop: median)"
    maps = replace(spec, objective="map50")
    rows = ctl.leaderboard(maps, [v(0, curve=[(100, 0.2)]), v(1, curve=[(100, 0.9)])], 0)
    assert [r.trial for r in rows] == [1, 0]


def make_run(state: RunState, outcomes=()) -> Run:
    run = Run(id="r1", data="/d", cfg="/c", weights=None, base_dir="/", overrides={},
              policy={}, host="h", created_at=0, max_batches=10, state=state)
    for n, outcome in enumerate(outcomes, 1):
        run.attempts.append(Attempt(number=n, command=[], hyper={}, start_weights=None,
                                    start_iteration=0, host="h", workdir="", log_path="",
                                    started_at=float(n), outcome=outcome, last_iteration=5))
    return run


def test_trial_state_and_view_come_from_the_trial_and_its_run():
    trial = Trial(index=0, params={}, cfg="/c", overrides={}, run_id="r1")
    assert ctl.trial_state(replace(trial, run_id=None), None) is S.PENDING
    assert ctl.trial_state(replace(trial, cancelled=True), None) is S.CANCELLED
    assert ctl.trial_state(replace(trial, error="gone"), None) is S.FAILED
    assert ctl.trial_state(trial, make_run(RunState.QUEUED)) is S.QUEUED
    assert ctl.trial_state(trial, make_run(RunState.RUNNING)) is S.RUNNING
    stopping = replace(trial, stop_reason="median")
    assert ctl.trial_state(stopping, make_run(RunState.RUNNING)) is S.STOPPING
    assert ctl.trial_state(stopping, make_run(RunState.CANCELLED)) is S.STOPPED
    assert ctl.trial_state(trial, make_run(RunState.CANCELLED)) is S.CANCELLED
    run = make_run(RunState.COMPLETED, [Outcome.DIVERGED, Outcome.DIVERGED, Outcome.COMPLETED])
    view = ctl.view(trial, run)
    assert (view.state, view.attempts, view.divergences, view.started_at) == \
        (S.COMPLETED, 3, 2, 1.0)
    # an ended trial keeps a snapshot, and its view needs no run any more
    assert ctl.snapshot(trial, make_run(RunState.RUNNING)) is None
    kept = replace(trial, result=ctl.snapshot(trial, run))
    assert ctl.view(kept, None, curve=((5, 1.0),)) == replace(view, curve=((5, 1.0),))


# -- dataset recipes -------------------------------------------------------------------

RECIPE = """\
base:
  recipe: {synth: {n: 40, canvas: [96, 96], mark_px: [14, 30]}, package: {network: 64}}
  cfg: micro.cfg
parameters:
  learning_rate: [0.001, 0.002]
  synth.negatives: [0.0, 0.2]
"""


def test_trials_with_the_same_recipe_share_its_key_and_recipes_are_not_net_overrides(
        tmp_path):
    micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    (tmp_path / "sweep.yaml").write_text(RECIPE)
    spec = load_spec(tmp_path / "sweep.yaml")
    trials = ctl.plan(spec)
    keys = [t.recipe_key for t in trials]
    assert keys[0] == keys[2] != keys[1] == keys[3]
    assert all("synth.negatives" not in t.overrides for t in trials)
    recipes = ctl.recipes(spec, trials)
    assert sorted(recipes) == sorted(set(keys))
    assert recipes[keys[1]]["synth"]["negatives"] == 0.2
    assert recipes[keys[0]]["synth"]["n"] == 40
    again = ctl.plan(spec)  # content-addressed: the same recipe, the same key
    assert [t.recipe_key for t in again] == keys


def test_a_trial_waits_for_its_dataset_without_holding_back_the_others():
    trial = Trial(index=0, params={}, cfg="/c", overrides={}, recipe_key="rk")
    assert ctl.trial_state(trial, None, None) is S.BUILDING
    assert ctl.trial_state(trial, None, {"state": "building"}) is S.BUILDING
    assert ctl.trial_state(trial, None, {"state": "ready"}) is S.PENDING
    waiting = ctl.view(trial, None, build={"state": "queued"}, waiting="queued for an "
                                                                      "augment worker")
    assert waiting.state is S.BUILDING and not waiting.state.active
    assert waiting.message == "waiting for dataset rk: queued for an augment worker"
    views = [v(0, S.BUILDING, recipe_key="ra"), v(1, S.BUILDING, recipe_key="ra"),
             v(2, S.PENDING, recipe_key="rb"), v(3, S.BUILDING, recipe_key="rc")]
    assert ctl.next_to_start(views, concurrency=1) == [2]  # trial 2's data is ready
    assert not ctl.finished(views)
    # datasets wanted: those of the next 2 x concurrency trials not started, once each
    assert ctl.builds_wanted(views, concurrency=1) == ["ra"]
    assert ctl.builds_wanted(views, concurrency=2) == ["ra", "rc"]


def test_the_leaderboard_carries_each_trials_recipe_and_dataset(spec_file):
    spec = spec_file("parameters: {learning_rate: [0.001]}\n")
    rows = ctl.leaderboard(spec, [v(0, S.COMPLETED, curve=[(10, 0.5)], recipe_key="ra",
                                    dataset="d1"), v(1, S.BUILDING, recipe_key="rb")], 0.0)
    assert [(r.trial, r.recipe, r.dataset) for r in rows] == [(0, "ra", "d1"), (1, "rb", None)]
    assert rows[0].to_dict()["dataset"] == "d1" and rows[1].to_dict()["recipe"] == "rb"


def test_early_stopping_rules_that_can_never_fire_are_refused_at_their_line(spec_file):
    spec = spec_file("parameters: {learning_rate: [0.001]}\n"
                     "budget: {iterations: 80}\n"
                     "early_stopping:\n  zero_map_after: 20\n")
    with pytest.raises(BadInput) as e:
        ctl.plan(spec)  # eval_every 1000: the first evaluation after 20 is past 80
    assert e.value.line == 5 and "zero_map_after: 20 can never fire" in str(e.value)
    assert "at 1000" in str(e.value)
    ctl.plan(replace(spec, eval_every=40))  # an evaluation at 40 < 80: it can fire
    spec = spec_file("parameters: {learning_rate: [0.001]}\n"
                     "early_stopping: {median: {grace: 500}}\n")
    with pytest.raises(BadInput, match="grace: 500 can never fire"):
        ctl.plan(spec)  # the trials end at the cfg's max_batches, 200


def test_a_budget_scales_steps_with_max_batches(spec_file):
    [trial] = ctl.plan(spec_file("parameters: {learning_rate: [0.001]}\n"
                                 "budget: {iterations: 100}\n"))
    assert trial.overrides["steps"] == "80,90"  # the cfg's 160,180 at 200


def test_a_screens_sweep_ranks_on_screens_map_and_shows_tile_map_beside_it(spec_file):
    """The trial best on tiles is not the best on whole screenshots (the seed's gap):
    objective screens_map50 ranks on the screens, and both mAPs are in every row."""
    spec = replace(spec_file(LOSS), objective="screens_map50")
    views = [v(0, S.COMPLETED, curve=[(100, 0.30), (200, 0.41)], maps=[(100, 0.9), (200, 0.95)],
               screens=[(100, 0.30), (200, 0.41)]),
             v(1, S.COMPLETED, curve=[(100, 0.62), (200, 0.55)], maps=[(100, 0.7), (200, 0.8)],
               screens=[(100, 0.62), (200, 0.55)]),
             v(2, S.RUNNING)]
    rows = ctl.leaderboard(spec, views, now=0)
    assert [(r.trial, r.rank) for r in rows] == [(1, 1), (0, 2), (2, None)]
    assert (rows[0].best, rows[0].best_iteration) == (0.62, 100)
    assert (rows[0].tile_map, rows[0].screens_map) == (0.8, 0.62)
    assert (rows[1].tile_map, rows[1].screens_map) == (0.95, 0.41)
    assert rows[2].tile_map is None and rows[2].to_dict()["screens_map"] is None
    assert ctl.objective_label("screens_map50") == "screens mAP@0.50"
    assert ctl.format_value("screens_map50", 0.62) == "62.00 %"
