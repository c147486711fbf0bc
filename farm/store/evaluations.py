"""Evaluations of a run's checkpoints and its best, in Redis (farm.eval writes them; the
chart, the board, the CLI and sweeps read them). Keys:

    farm:run:<id>:evals      hash: iteration -> JSON evaluation of the checkpoint at it
    farm:run:<id>:best       JSON of the best evaluation (with its score)
    farm:run:<id>:lasteval   JSON of the evaluation of the newest checkpoint evaluated so far
    farm:run:<id>:evalsent   set of iterations whose evaluation was sent to the eval queue
"""
from __future__ import annotations

import json
from dataclasses import replace

from farm.eval.evaluation import Evaluation
from farm.store import scripts
from farm.store.redis import Connection, key


class EvaluationStore:
    def __init__(self, db: Connection):
        self.db = db

    def mark_sent(self, run_id: str, iteration: int) -> None:
        with self.db.translated():
            self.db.r.sadd(key("run", run_id, "evalsent"), int(iteration))

    def sent(self, run_id: str) -> set[int]:
        with self.db.translated():
            return {int(x) for x in self.db.r.smembers(key("run", run_id, "evalsent"))}

    def pending(self, run_id: str) -> set[int]:
        """Iterations whose evaluation was sent and is not recorded yet (one round trip)."""
        with self.db.translated():
            pipe = self.db.r.pipeline(transaction=False)
            pipe.smembers(key("run", run_id, "evalsent"))
            pipe.hkeys(key("run", run_id, "evals"))
            sent, done = pipe.execute()
        return {int(x) for x in sent} - {int(x) for x in done}

    def record(self, run_id: str, result: Evaluation, score: float | None) -> bool:
        """Store an evaluation; True when it is now the run's best (a higher score, or the
        same score at a later iteration, like darknet's `>=`). Atomic, so evaluations that
        finish in any order on any worker agree on one best. `score` None: never best."""
        it = int(result.iteration)
        doc = json.dumps(result.to_dict())
        with self.db.translated():
            return bool(self.db.script(scripts.RECORD_EVALUATION)(
                keys=[key("run", run_id, "evals"), key("run", run_id, "best"),
                      key("run", run_id, "lasteval")],
                args=[it, doc, "" if score is None else repr(float(score)),
                      json.dumps(replace(result, score=score).to_dict())]))

    def all(self, run_id: str) -> list[Evaluation]:
        """Every evaluation of the run, by iteration."""
        with self.db.translated():
            raw = self.db.r.hvals(key("run", run_id, "evals"))
        return by_iteration(raw)

    def best(self, run_id: str) -> Evaluation | None:
        """The run's best evaluation (with its `score`), None before the first."""
        with self.db.translated():
            raw = self.db.r.get(key("run", run_id, "best"))
        return loads(raw)


def loads(raw: str | None) -> Evaluation | None:
    return Evaluation.from_dict(json.loads(raw)) if raw else None


def by_iteration(raws: list[str]) -> list[Evaluation]:
    """Evaluations as stored in a run's hash, by iteration."""
    return sorted((Evaluation.from_dict(json.loads(x)) for x in raws),
                  key=lambda e: e.iteration)
