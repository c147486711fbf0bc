"""The sweep spec: what it accepts, and one clear message (file:line) per mistake."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from farm.errors import BadInput
from farm.sweeps.spec import SweepSpec, check_concurrency, load_spec
from workers.micro import micro_cfg


@pytest.fixture
def folder(tmp_path) -> Path:
    micro_cfg(tmp_path / "micro.cfg", max_batches=200)
    micro_cfg(tmp_path / "big.cfg", max_batches=200, size=96)
    (tmp_path / "obj.data").write_text("classes = 1\ntrain = train.txt\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


GOOD = """
base:
  data: obj.data
  cfg: micro.cfg
parameters:
  learning_rate: [0.001, 0.002]
  batch/subdivisions: ["8/2", "8/4"]
"""


def refused(folder: Path, text: str) -> BadInput:
    with pytest.raises(BadInput) as e:
        load_spec(write(folder, text))
    return e.value


def line_of(path: Path, needle: str) -> int:
    return next(n for n, t in enumerate(path.read_text().splitlines(), 1) if needle in t)


def test_a_grid_spec_loads_with_defaults_and_absolute_paths(folder):
    spec = load_spec(write(folder, GOOD))
    assert spec.search == "grid" and spec.trials == 4 and spec.concurrency == 1
    assert spec.data == str(folder / "obj.data") and spec.cfg == str(folder / "micro.cfg")
    assert [p.values for p in spec.parameters] == [("0.001", "0.002"), ("8/2", "8/4")]
    assert spec.objective == "map50" and spec.goal == "max"
    assert spec.early_stopping.median is None and spec.budget.iterations is None
    assert spec.eval_every == 1000


def test_the_spec_survives_a_json_round_trip(folder):
    spec = load_spec(write(folder, GOOD + """
    budget: {iterations: 100, wall_time: 90m}
    early_stopping: {zero_map_after: 50, median: {grace: 20}}
    policy: {burn_in_min: 0}
    """.replace("\n    ", "\n")))
    assert spec.budget.wall_time == 5400
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_random_search_reads_ranges_and_yaml_exponents(folder):
    spec = load_spec(write(folder, """
    base: {data: obj.data, cfg: micro.cfg}
    parameters:
      learning_rate: {log_uniform: [1e-4, 1e-2]}
      burn_in: {uniform: [0, 100]}
      width/height: [64, "96/64"]
    trials: 5
    seed: 3
    objective: min_avg_loss
    """))
    lr, burn, size = spec.parameters
    assert (lr.range, lr.low, lr.high) == ("log_uniform", 1e-4, 1e-2)
    assert size.values == ("64/64", "96/64")
    assert spec.search == "random" and spec.trials == 5 and spec.goal == "min"


def test_an_unknown_parameter_names_its_line_and_the_closest_key(folder):
    path = folder / "sweep.yaml"
    e = refused(folder, GOOD + "  learnin_rate: [0.1]\n")
    assert e.path == str(path) and e.line == line_of(path, "learnin_rate")
    assert "unknown parameter 'learnin_rate'" in e.reason and "learning_rate" in e.hint


def test_an_empty_grid_is_refused(folder):
    e = refused(folder, GOOD + "  momentum: []\n")
    assert e.line == line_of(folder / "sweep.yaml", "momentum")
    assert "parameter momentum: the grid is empty" in e.reason
    assert "at least one value" in e.hint


def test_a_range_with_low_above_high_is_refused_with_the_fix(folder):
    e = refused(folder, """
    base: {data: obj.data, cfg: micro.cfg}
    parameters:
      learning_rate:
        log_uniform: [0.01, 0.001]
    trials: 4
    """)
    assert e.line == line_of(folder / "sweep.yaml", "log_uniform")
    assert "[0.01, 0.001] has low > high" in e.reason and "[0.001, 0.01]" in e.hint


def test_a_base_cfg_that_does_not_exist_is_refused(folder):
    e = refused(folder, GOOD.replace("cfg: micro.cfg", "cfg: nope.cfg"))
    assert e.line == line_of(folder / "sweep.yaml", "nope.cfg")
    assert "base cfg nope.cfg does not exist" in e.reason
    assert str(folder / "nope.cfg") in e.reason


def test_a_cfg_choice_that_does_not_exist_is_refused_at_its_item(folder):
    e = refused(folder, """
    base: {data: obj.data}
    parameters:
      cfg:
        - micro.cfg
        - missing.cfg
    """)
    assert e.line == line_of(folder / "sweep.yaml", "missing.cfg")
    assert "base cfg missing.cfg does not exist" in e.reason


def test_concurrency_above_the_gpu_workers_is_a_warning_not_an_error(folder):
    spec = load_spec(write(folder, GOOD + "concurrency: 4\n"))
    warning = check_concurrency(spec, gpu_workers=2)
    assert "concurrency 4 is above the 2 worker(s) on queue 'gpu'" in warning
    assert "2 trial(s) at a time will wait" in warning
    assert check_concurrency(spec, gpu_workers=4) is None
    assert "no worker is consuming queue 'gpu'" in check_concurrency(spec, 0)


@pytest.mark.parametrize("extra, where, reason", [
    ("  momentum: [abc]\n", "abc", "momentum=abc: 'abc' is not a number"),
    ("  width/height: ['64/0']\n", "64/0", "height=0: must be greater than 0"),
    ("  burn_in: {uniform: [0, 10]}\nsearch: grid\n", "uniform",
     "a range needs search: random"),
    ("  burn_in: {uniform: [0, 10]}\n", "uniform", "burn_in is a range, so this is a random "
                                                   "search: it needs trials: N"),
    ("  momentum: {between: [0, 1]}\n", "between", "a mapping must be one range"),
    ("trials: 3\n", "trials", "trials: applies to random search; this grid has 4 trials"),
    ("concurrency: 0\n", "concurrency", "concurrency: 0 is below 1"),
    ("objective: best_map\n", "objective", "objective: 'best_map' is unknown"),
    ("budget: {wall_time: soon}\n", "wall_time", "budget.wall_time: 'soon' is not a duration"),
    ("budget: {iteration: 5}\n", "iteration", "unknown key 'iteration' in budget"),
    ("policy: {max_restarts: 2}\n", "max_restarts", "unknown policy key 'max_restarts'"),
    ("paramters: {}\n", "paramters", "unknown key 'paramters' in the spec"),
    ("early_stopping: {median: {grace: -1}}\n", "grace", "grace: -1 is below 0"),
])
def test_each_mistake_gets_one_message_at_its_line(folder, extra, where, reason):
    e = refused(folder, GOOD + extra)
    assert reason in e.reason
    assert e.line == line_of(folder / "sweep.yaml", where)


def test_a_missing_dataset_and_a_misplaced_recipe_key_say_what_to_do(folder):
    e = refused(folder, GOOD.replace("data: obj.data", "data: gone/obj.data"))
    assert "obj.data gone/obj.data does not exist" in e.reason
    e = refused(folder, GOOD.replace("data: obj.data", "recipe: {marks: 100}"))
    assert "unknown key 'marks' in base.recipe" in e.reason  # marks go in recipe.synth
    assert e.hint == "known: synth, package" and e.line == 2


def test_yaml_syntax_errors_and_duplicate_keys_name_the_line(folder):
    e = refused(folder, GOOD + "concurrency: [1\n")
    assert e.reason.startswith("not valid YAML") and e.line is not None
    e = refused(folder, GOOD + "  learning_rate: [0.1]\n")
    assert "parameters.learning_rate is given twice" in e.reason
    assert e.line == len((folder / "sweep.yaml").read_text().splitlines())


def test_batch_must_be_a_multiple_of_subdivisions(folder):
    e = refused(folder, GOOD.replace('"8/4"', '"8/3"'))
    assert "batch=8 is not a multiple of subdivisions=3" in e.reason
    assert e.line == line_of(folder / "sweep.yaml", "8/3")


def test_max_batches_above_the_iteration_budget_is_refused(folder):
    e = refused(folder, GOOD + "  max_batches: [100, 500]\nbudget: {iterations: 200}\n")
    assert "max_batches 500 is above budget.iterations 200" in e.reason


# -- dataset recipes (farm.datasets.recipe) ------------------------------------------------

RECIPE = """
base:
  recipe:
    synth:
      n: 40
      seed: 3
      canvas: 96x96
      mark_px: [14, 30]
    package: {valid_ratio: 0.25, network: 64}
  cfg: micro.cfg
parameters:
  learning_rate: [0.001]
  synth.blur: [0.0, 0.5]
"""


def test_a_recipe_loads_in_full_and_its_parameters_are_canonical(folder):
    spec = load_spec(write(folder, RECIPE))
    assert spec.data is None and spec.trials == 2
    synth, package = spec.recipe["synth"], spec.recipe["package"]
    assert (synth["n"], synth["seed"], synth["canvas"], synth["mark_px"]) == \
        (40, 3, [96, 96], [14, 30])
    assert synth["flip"] == "hv" and synth["rotation"] == 10  # defaults written out
    assert package == {"valid_ratio": 0.25, "network": [64, 64], "seed": 0}
    assert spec.parameters[1].values == ("0", "0.5")  # 0.0 and 0 are one recipe
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_list_settings_take_a_list_of_lists_and_sizes_their_spellings(folder):
    spec = load_spec(write(folder, RECIPE.replace("synth.blur: [0.0, 0.5]", """\
synth.mark_px: [[14, 30], [20, 40]]
  synth.canvas: ["96x96", 128]
  synth.flip: [h, hv]
  synth.negatives: {uniform: [0.0, 0.3]}""") + "search: random\ntrials: 3\n"))
    px, canvas, flip, negatives = spec.parameters[1:]
    assert px.values == ("[14,30]", "[20,40]") and canvas.values == ("[96,96]", "[128,128]")
    assert flip.values == ("h", "hv") and (negatives.range, negatives.high) == ("uniform", 0.3)


def test_an_unknown_synthesis_key_names_its_line_and_the_closest(folder):
    e = refused(folder, RECIPE.replace("seed: 3", "blurr: 0.3"))
    assert e.line == line_of(folder / "sweep.yaml", "blurr")
    assert "unknown key 'blurr' in base.recipe.synth" in e.reason and "blur" in e.hint
    e = refused(folder, RECIPE.replace("synth.blur:", "synth.blurr:"))
    assert e.line == line_of(folder / "sweep.yaml", "synth.blurr")
    assert "unknown parameter 'synth.blurr': not a synth setting" in e.reason
    assert e.hint.startswith("closest: synth.blur")


def test_data_and_recipe_together_are_refused_at_the_recipe(folder):
    e = refused(folder, RECIPE.replace("  recipe:", "  data: obj.data\n  recipe:"))
    assert e.line == line_of(folder / "sweep.yaml", "recipe:")
    assert "base.data and base.recipe both give the dataset" in e.reason
    e = refused(folder, GOOD.replace("  data: obj.data\n", ""))
    assert "base needs the dataset: data:" in e.reason and e.line == 1


def test_a_negative_n_is_refused_in_the_base_and_in_a_parameter(folder):
    e = refused(folder, RECIPE.replace("n: 40", "n: -5"))
    assert e.line == line_of(folder / "sweep.yaml", "n: -5")
    assert e.reason == "base.recipe.synth.n: -5 is below 1"
    e = refused(folder, RECIPE.replace("synth.blur: [0.0, 0.5]", "synth.n: [20,\n    -3]"))
    assert e.line == line_of(folder / "sweep.yaml", "-3]")
    assert e.reason == "parameter synth.n: -3 is below 1"


def test_recipe_values_are_checked_alone_and_together(folder):
    e = refused(folder, RECIPE.replace("seed: 3", "blur: 3"))
    assert e.line == line_of(folder / "sweep.yaml", "blur: 3")
    assert "blur=3 is not a probability" in e.reason
    e = refused(folder, RECIPE.replace("synth.blur: [0.0, 0.5]", "synth.canvas: [64x64, 96x96]\n"
                                       "  synth.mark_px: [[14, 30], [40, 60]]"))
    assert e.line == line_of(folder / "sweep.yaml", "synth.canvas")  # only together
    assert "synth.canvas=[64,64] synth.mark_px=[40,60] is refused" in e.reason
    assert "do not fit on a 64x64 canvas" in e.reason
    e = refused(folder, RECIPE.replace("network: 64", "network: 100"))
    assert "package.network 100x100 is not a darknet network size" in e.reason


def test_synthesis_parameters_need_a_recipe(folder):
    e = refused(folder, GOOD + "  synth.blur: [0.1]\n")
    assert e.line == line_of(folder / "sweep.yaml", "synth.blur")
    assert "changes the dataset recipe, but base has no recipe" in e.reason


def test_screens_objective_needs_a_screens_set_and_checks_it_at_its_line(folder):
    e = refused(folder, GOOD + "objective: screens_map50\n")
    assert e.line == line_of(folder / "sweep.yaml", "objective") and "eval:" in e.reason
    e = refused(folder, GOOD + "objective: screens_map50\neval: {screens: .}\n")
    assert e.line == line_of(folder / "sweep.yaml", "eval") and "eval.screens" in e.reason
    e = refused(folder, GOOD + "eval: {screns: shots}\n")
    assert e.line == line_of(folder / "sweep.yaml", "eval")


def test_a_screens_set_in_the_spec_is_kept_as_its_obj_data(folder):
    from farm.datasets.screens import package_screens
    from tests.screens_kit import labelimg_folder
    labelimg_folder(folder / "labelimg", 2, seed=2)
    made = package_screens([folder / "labelimg"], folder / "ds",
                           names=folder / "labelimg" / "obj.names")
    rel = Path(made.path).relative_to(folder)
    spec = load_spec(write(folder, GOOD + f"objective: screens_map50\neval: {{screens: {rel}}}\n"))
    assert spec.eval_screens == str(Path(made.path) / "obj.data") and spec.goal == "max"
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
