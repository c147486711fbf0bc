"""The sweep spec: one YAML file that says what to try, how many at once, for how long,
how to rank the trials and when to give up on one.

The seed spent six weeks trying seven configurations by hand, one after another; a typo
found on day three costs three days. So the whole spec is checked before a trial starts,
and every problem is reported as `spec.yaml:LINE: what is wrong` with what to write.

    name: lr-search                     # optional; shown by `farm sweep show`
    base:
      data: ds/obj.data                 # paths are relative to this file
      cfg: yolov4-tiny-custom.cfg       # or choose among several with parameters.cfg
      weights: yolov4-tiny.conv.29      # optional start weights
      set: {burn_in: 1000}              # [net] values every trial trains with
    search: grid                        # grid (default if every parameter is a list) | random
    parameters:                         # a list: grid values (random search: a choice)
      learning_rate: [0.001, 0.002]     # any [net] key darknet reads
      # learning_rate: {log_uniform: [0.0001, 0.01]}   # ranges: random search only
      # momentum: {uniform: [0.85, 0.95]}              # integer keys are rounded
      # batch/subdivisions: ["64/16", "64/32"]         # set together
      # width/height: [320, 416, "416/256"]            # one number = square
      # cfg: [yolov4-tiny-custom.cfg, yolov3-tiny.cfg] # the base cfg
      # max_batches: [2000, 4000]
    trials: 8                           # random search: how many trials
    seed: 0                             # random search: same seed, same trials
    concurrency: 2                      # trials training at once (one per GPU worker)
    queue: gpu                          # where trials train (host.<name> pins a host)
    budget:
      iterations: 2000                  # max_batches of every trial (steps scaled along)
      wall_time: 2h                     # per trial (s, m or h); a trial over it is stopped
    objective: map50                    # best mAP@0.50 (default) | min_avg_loss | screens_map50
    eval: {screens: shots/}             # a screens set every evaluation also scores: the
                                        # user's whole screenshots (needed by screens_map50)
    early_stopping:
      zero_map_after: 1000              # stop a trial still at mAP 0 (< 1 %) after this
      median: {grace: 500, min_trials: 2}   # stop a trial worse than the median of the
                                        # others at the same iteration, after `grace`
    policy: {max_divergence_restarts: 3}    # the divergence policy of every trial
    eval_every: 1000                    # evaluate each trial's checkpoints this often

How the objective is read: `map50` is the best mAP@0.50 of the trial's evaluations: the
farm's own (farm.eval, every `eval_every` iterations and at the end; `Store.evaluations`),
else the `-map` blocks darknet printed (`Store.maps`). Debian's darknet has no `-map`, so
there the farm's evaluations are the only mAP, and a trial ranks once one has landed.
`min_avg_loss` is the lowest finite `avg loss` in the trial's metrics stream, which every
dialect prints: use it where no mAP is available, or to rank before the first evaluation.
`screens_map50` is the best screens mAP@0.50 (farm.eval.screens: tiled detection over the
whole screenshots of `eval.screens`, merged, scored against their labels): what the user
needs, and each trial's best weights are then the best on the screens. Any objective
shows tile mAP and screens mAP side by side when `eval.screens` is given.

A dataset recipe instead of `base.data` (farm.datasets.recipe): the farm synthesizes and
packages the dataset itself, once per distinct recipe, and `synth.*` / `package.*`
parameters vary it per trial like any other parameter:

    base:
      recipe:
        synth: {n: 96, seed: 1, canvas: [96, 96], mark_px: [14, 30], negatives: 0.05}
        package: {valid_ratio: 0.25, network: [64, 64]}
      cfg: micro.cfg
    parameters:
      synth.blur: [0.0, 0.5]            # two recipes: two datasets, each built once
      learning_rate: [0.001, 0.002]     # four trials; each pair shares a dataset

The spec as data is in model.py, its reading and line-by-line checks in parse.py.
"""
from farm.sweeps.spec.model import (JOINT, MAX_TRIALS, OBJECTIVES, PARAMETERS, RANGES, Budget,
                                    EarlyStopping, MedianRule, Param, SweepSpec,
                                    check_concurrency, check_rules_can_fire)
from farm.sweeps.spec.parse import MAX_RECIPE_CHECKS, load_spec, parse_spec

__all__ = ["JOINT", "MAX_RECIPE_CHECKS", "MAX_TRIALS", "OBJECTIVES", "PARAMETERS", "RANGES",
           "Budget", "EarlyStopping", "MedianRule", "Param", "SweepSpec", "check_concurrency",
           "check_rules_can_fire", "load_spec", "parse_spec"]
