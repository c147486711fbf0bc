"""Prometheus metrics of the farm (`/metrics`, text format 0.0.4).

Per run (the newest RUNS_LIMIT runs; running ones for the live figures): iteration,
avg loss, iterations per second, restarts by the outcome that caused them, best and
newest mAP. Farm-wide: runs by state, restarts by outcome, messages waiting per queue,
workers up per queue, trials of each running sweep by state, free disk of the data dir,
and under `farm up` the deaths of its children and those it gave up on.

Queue depth and workers come from Celery (kombu's passive queue declare, a broadcast
asking workers for their queues). The broadcast waits a second for replies, so
CeleryWatch asks in the background every WATCH_EVERY seconds and a scrape reads the
latest answer (its age is a metric too).
"""
from __future__ import annotations

import shutil
import threading
import time

from dashboard.board import RUNS_LIMIT, finite, supervision
from dashboard.sweeps import active_trial_counts
from farm.runs.chart import iterations_per_second
from farm.queues import ROLE_QUEUES
from farm.runs.model import RunState
from farm.settings import Settings
from farm.store import Store

#: seconds between two looks at Celery's workers and queues
WATCH_EVERY = 15.0
#: seconds a broadcast waits for the workers' replies
REPLY_WAIT = 1.0


class CeleryWatch:
    """The workers consuming each queue and the messages waiting in it, refreshed on a
    thread of its own from the first scrape on."""

    def __init__(self, settings: Settings, every: float = WATCH_EVERY):
        self.settings, self.every = settings, every
        self.latest: dict | None = None
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def snapshot(self, wait: float = REPLY_WAIT + 1.0) -> dict | None:
        """The newest look ({"at", "workers": {queue: n}, "depth": {queue: n}}); the
        first call starts the watch and waits for its first answer."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="celery-watch",
                                               daemon=True)
                self.thread.start()
        self.ready.wait(wait)
        return self.latest

    def close(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        from workers.app import make_app
        app = make_app(self.settings)
        store = Store(self.settings.effective_redis_url)
        while not self.stopped.is_set():
            try:
                self.latest = look(app, store)
            except Exception:  # noqa: BLE001 - the broker away for a moment: keep the last look
                pass
            self.ready.set()
            self.stopped.wait(self.every)


def look(app, store: Store) -> dict:
    """Workers per queue (their replies to a broadcast) and messages waiting per queue."""
    from kombu.exceptions import ChannelError
    from workers.presence import active_queues
    replies = active_queues(app, store, REPLY_WAIT)
    workers: dict[str, int] = {q: 0 for q in ROLE_QUEUES}
    for queues in replies.values():
        for name in {q.get("name") for q in queues or () if q.get("name")}:
            workers[name] = workers.get(name, 0) + 1
    depth: dict[str, int] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for name in sorted(workers):
            try:
                depth[name] = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:
                depth[name] = 0  # never declared: nothing was ever sent to it
    return {"at": time.time(), "workers": workers, "depth": depth}


def prometheus_text(store: Store, settings: Settings, watch: CeleryWatch | None) -> str:
    rows = store.board.runs_list(RUNS_LIMIT)
    out: list[str] = []

    def gauge(name: str, what: str, samples) -> None:
        out.extend([f"# HELP {name} {what}", f"# TYPE {name} gauge"])
        out.extend(f"{name}{{{labels}}} {value:.6g}" if labels else f"{name} {value:.6g}"
                   for labels, value in samples)

    by_state = {s.value: 0 for s in RunState}
    for row in rows:
        by_state[row["run"]["state"]] = by_state.get(row["run"]["state"], 0) + 1
    gauge("farm_runs", f"Runs by state (the newest {RUNS_LIMIT} runs).",
          [(f'state="{s}"', n) for s, n in by_state.items()])
    running = [row for row in rows if row["run"]["state"] == RunState.RUNNING.value]
    gauge("farm_run_iteration", "Last training iteration of a run.",
          [(_labels(row), float(row["live"]["iteration"])) for row in rows
           if row["live"].get("iteration")])
    gauge("farm_run_avg_loss", "darknet's avg loss of a running run, last iteration.",
          [(_labels(row), finite(row["live"].get("avg_loss"))) for row in running
           if finite(row["live"].get("avg_loss")) is not None])
    gauge("farm_run_iterations_per_second", "Training speed of a running run, last samples.",
          [(_labels(row), iterations_per_second(store.progress.chart_state(row["run"]["id"])[0]))
           for row in running])
    restarts = [(row, _restarts(row["run"])) for row in rows]
    gauge("farm_run_restarts", "Restarts of a run by the outcome of the attempt before "
          "(diverged, crashed, stalled, lost).",
          [(f'{_labels(row)},outcome="{o}"', n) for row, counts in restarts
           for o, n in sorted(counts.items())])
    total: dict[str, int] = {}
    for _, counts in restarts:
        for o, n in counts.items():
            total[o] = total.get(o, 0) + n
    gauge("farm_restarts", f"Restarts by outcome over the newest {RUNS_LIMIT} runs.",
          [(f'outcome="{o}"', n) for o, n in sorted(total.items())])
    for name, key, what in (("last_map", "last_evaluation", "of the newest evaluated checkpoint"),
                            ("best_map", "best", "best so far")):
        gauge(f"farm_run_{name}", f"mAP@0.50 (fraction) {what}.",
              [(_labels(row), row[key].map) for row in rows
               if row[key] and row[key].map is not None])
    gauge("farm_sweep_trials", "Trials of each running sweep by state.",
          [(f'sweep="{sweep}",state="{state}"', n)
           for sweep, counts in sorted(active_trial_counts(store).items())
           for state, n in sorted(counts.items())])
    farm = supervision(store.events.recent(200))
    if farm["events"]:  # only where `farm up` supervises
        gauge("farm_up_children_given_up", "1 for a child of `farm up` given up after a "
              "crash loop (not restarted until the next `farm up`).",
              [(f'child="{_clean(e["child"])}"', 1) for e in farm["given_up"]])
        gauge("farm_up_child_deaths", "Deaths of `farm up`'s children since it came up.",
              [("", farm["deaths"])])
    seen = watch.snapshot() if watch else None
    if seen:
        gauge("farm_queue_depth", "Messages waiting in a Celery queue.",
              [(f'queue="{_clean(q)}"', n) for q, n in sorted(seen["depth"].items())])
        gauge("farm_workers_up", "Celery workers consuming a queue (they answered the "
              "board's last broadcast).",
              [(f'queue="{_clean(q)}"', n) for q, n in sorted(seen["workers"].items())])
        gauge("farm_celery_look_age_seconds", "Age of the board's last look at Celery.",
              [("", time.time() - seen["at"])])
    try:
        disk = shutil.disk_usage(settings.data_dir)
        gauge("farm_data_dir_free_bytes", "Free space on the data dir's filesystem.",
              [("", disk.free)])
        gauge("farm_data_dir_size_bytes", "Size of the data dir's filesystem.",
              [("", disk.total)])
    except OSError:
        pass
    return "\n".join(out) + "\n"


def _restarts(run: dict) -> dict[str, int]:
    """Restarts of a run by the outcome of the attempt each one followed."""
    counts: dict[str, int] = {}
    for a in (run.get("attempts") or [])[:-1]:
        outcome = a.get("outcome") or "unknown"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _clean(value) -> str:
    return str(value).replace("\\", "").replace('"', "").replace("\n", " ")


def _labels(row: dict) -> str:
    run = row["run"]
    attempts = run.get("attempts") or []
    host = attempts[-1]["host"] if attempts else run.get("host", "")
    return f'run="{_clean(run["id"])}",host="{_clean(host)}"'

