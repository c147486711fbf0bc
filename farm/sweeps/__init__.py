"""Sweeps: a YAML spec that expands into trials (training runs), a controller that keeps
every GPU busy with them, stops hopeless ones early and ranks the rest.

    spec.py        the spec file: parsing and validation (file:line on every error)
    yamldoc.py     YAML with the line of every key, for those messages
    recipe.py      dataset recipes: parsing values, content address, synthesize + package
    builds.py      building each recipe's dataset once (the controller's and worker's sides)
    model.py       Sweep and Trial records as data
    controller.py  pure decisions: expand, what to start, what to stop, the leaderboard
    progress.py    reading each trial's objective (avg loss, mAP) incrementally
    service.py     submit / advance / cancel: the controller's side effects
    export.py      the best trial as a bundle ready for darknet

Their state in Redis: farm.store.sweeps and farm.store.recipes (keys documented there).
"""
