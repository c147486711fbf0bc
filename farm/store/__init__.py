"""The farm's state, in Redis: one store per noun over one connection.

    redis.py        the adapter: the client, key names, Redis errors as the farm's
                    (the only module of the project that imports redis)
    scripts.py      every Lua script
    lease.py        Lease: one holder at a time (runs, sweep locks, recipe builds)
    runs.py         run documents, the running set, leases and cancel flags
    progress.py     live figures, the metrics stream, darknet's mAP, log tail, chart
    evaluations.py  evaluations of checkpoints and each run's best
    sweeps.py       sweeps and their trials
    recipes.py      builds of recipe datasets
    events.py       `farm up`'s supervisor events
    notices.py      notifications' idempotency and delivery records
    workers.py      the Celery workers that say they are up, and their queues
    board.py        the board's multi-key reads (a read model; writes nothing)
"""
from __future__ import annotations

from farm.store.board import BoardReads
from farm.store.evaluations import EvaluationStore
from farm.store.events import SupervisorEvents
from farm.store.notices import NoticeLedger
from farm.store.progress import ProgressStore
from farm.store.recipes import RecipeStore
from farm.store.redis import Connection
from farm.store.runs import RunStore
from farm.store.sweeps import SweepStore
from farm.store.workers import WorkerPresence


class Store:
    """Every store of the farm over one Redis connection: what the CLI, the tasks and
    the board pass around. `patience`: seconds to ride out a Redis that went away (a
    worker); 0 fails at once (the CLI). `log_tail_lines`: log lines kept per run."""

    def __init__(self, url: str, *, log_tail_lines: int = 2000, patience: float = 0.0):
        self.db = Connection(url, patience=patience)
        self.runs = RunStore(self.db)
        self.progress = ProgressStore(self.db, log_tail_lines)
        self.evaluations = EvaluationStore(self.db)
        self.sweeps = SweepStore(self.db)
        self.recipes = RecipeStore(self.db)
        self.events = SupervisorEvents(self.db)
        self.notices = NoticeLedger(self.db)
        self.workers = WorkerPresence(self.db)
        self.board = BoardReads(self.db, self.runs)

    @property
    def url(self) -> str:
        return self.db.url

    def ping(self) -> None:
        self.db.ping()
