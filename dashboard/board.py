"""The farm board: runs, a live chart per run over its whole lineage, the attempts,
checkpoints with their mAP, the log tail, a link to the task in Flower; sweeps with
their trials overlaid beside the leaderboard; a JSON API and Prometheus metrics.

A tornado app behind the same password as Flower (user `farm`, the password in
`<data_dir>/flower.password`): a login form and a session cookie for browsers, HTTP
basic for scripts, a bearer token for Prometheus (dashboard/auth.py). Every route asks
for it: pages, API, static files and /metrics alike.

It must stay fast with big runs and big sweeps: the chart is drawn from the folded chart
state (farm.runs.chart; a few thousand buckets however long the run), the run page's data
comes from one pipelined Redis round trip, the runs list from two, a sweep's page holds
one page of its leaderboard. A background callback keeps the charts of running runs
folded, so a page never waits for a backlog.

Routes (views.py; the API returns what the pages draw):
    /login, /logout             the login form, the end of a session
    /                           runs list          /api/runs
    /runs/<id>                  run page           /api/runs/<id>
                                                   /api/runs/<id>/chart[?since=version]
                                /runs/<id>/chart.svg
                                                   /api/runs/<id>/metrics?after=<stream id>
                                                   /api/runs/<id>/log?lines=200
    /sweeps                     sweeps list        /api/sweeps
    /sweeps/<id>                trials overlaid,   /api/sweeps/<id>?page=1&per=25
                                the leaderboard
    /metrics                    Prometheus text (the password, or the scrape token)
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict

from farm.eval.evaluation import Evaluation
from farm.plot import runchart
from farm.runs.effective import effective_settings
from farm.settings import Settings
from farm.store import Store

RUNS_LIMIT = 500          #: runs in the runs list (newest first)
LOG_LINES = 200           #: log lines on a run page
FOLD_PER_REQUEST = 2000   #: entries a chart request folds itself; the rest in the background


# ---------------------------------------------------------------------------------------
# Data (plain functions: the handlers, the tests and bench/bench_board.py call them)


def finite(value) -> float | None:
    """The number in `value` when it is one and finite, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _eval_summary(e: Evaluation | None) -> dict | None:
    if not e:
        return None
    return {**{k: getattr(e, k) for k in ("iteration", "map", "evaluator", "precision",
                                          "recall", "f1", "tp", "fp", "fn", "avg_iou",
                                          "seconds", "error", "attempt", "worker",
                                          "evaluated_at", "best_weights")},
            **_screens_maps(e)}


def _screens_maps(e: Evaluation | None) -> dict:
    """The screens mAP beside the tile mAP (farm.eval.screens), when the run has one."""
    if e is None or e.screens is None:
        return {}
    return {"screens_map": e.screens.map, "screens_error": e.screens.error}


#: `farm up`'s events shown above the runs list (newest first)
EVENTS_SHOWN = 8


def supervision(events: list[dict]) -> dict:
    """What `farm up` did to its children since it last came up (events newest first,
    as farm.store.events keeps them): the newest events, and the children it gave up on
    after a crash loop (not running, and not restarted until the next `farm up`): an
    overnight farm without its beat or its GPU worker must say so where it is watched."""
    session = []
    for e in events:
        session.append(e)
        if e.get("child") == "farm" and e.get("event") == "up":
            break
    given_up = {}
    for e in reversed(session):  # oldest first: the newest word on each child wins
        if e.get("event") == "gave_up":
            given_up[e["child"]] = e
        elif e.get("event") in ("restarted", "up"):
            given_up.pop(e.get("child"), None)
    down = bool(events) and events[0].get("child") == "farm" and events[0].get("event") == "down"
    return {"events": session[:EVENTS_SHOWN], "given_up": [] if down else
            sorted(given_up.values(), key=lambda e: e["at"]),
            "deaths": sum(e.get("event") == "died" for e in session), "down": down}


def runs_payload(store: Store, limit: int = RUNS_LIMIT) -> dict:
    rows = []
    for row in store.board.runs_list(limit):
        run, live, best = row["run"], row["live"], row["best"]
        attempts = run.get("attempts") or []
        iteration = live.get("iteration")
        rows.append({
            "id": run["id"], "state": run["state"], "message": run.get("message", ""),
            "host": attempts[-1]["host"] if attempts else run.get("host"),
            "worker": run.get("worker"),
            "iteration": int(iteration) if iteration else _last_iteration(attempts),
            "max_batches": run.get("max_batches"), "avg_loss": finite(live.get("avg_loss")),
            "best_map": best.map if best else None,
            "best_screens_map": best.screens_map if best else None,
            "best_iteration": best.iteration if best else None,
            "last_map": row["last_evaluation"].map if row["last_evaluation"] else None,
            "attempts": len(attempts), "created_at": run.get("created_at"),
            "updated_at": finite(live.get("updated_at")), "sweep": run.get("sweep")})
    return {"runs": rows, "farm": supervision(store.events.recent(200)),
            "generated_at": time.time()}


def _last_iteration(attempts: list[dict]) -> int:
    return max((a["last_iteration"] for a in attempts if a.get("last_iteration") is not None),
               default=0)


def run_payload(store: Store, run_id: str, settings: Settings, host: str = "") -> dict:
    page = store.board.run_page(run_id, LOG_LINES)
    run, live = page["run"], page["live"]
    evals = {e.iteration: e for e in page["evaluations"]}
    attempts = []
    for a in run.attempts:
        d = asdict(a)
        d["outcome"] = a.outcome.value if a.outcome else None
        attempts.append({k: d[k] for k in (
            "number", "reason", "changes", "hyper", "outcome", "message", "start_iteration",
            "last_iteration", "started_at", "ended_at", "host", "exit_code",
            "first_bad_iteration", "log_path")})
        attempts[-1]["effective"] = effective_settings(run, a).text
    pending = store.evaluations.pending(run_id)  # sent, not recorded: "…", else "-"
    checkpoints = [{"iteration": c.iteration, "attempt": c.attempt, "finite": c.finite,
                    "path": c.path, "evaluation": _eval_summary(evals.get(c.iteration)),
                    "pending": c.iteration in pending}
                   for c in run.checkpoints]
    return {
        "id": run.id, "state": run.state.value, "message": run.message, "data": run.data,
        "cfg": run.cfg, "weights": run.weights, "overrides": run.overrides,
        "max_batches": run.max_batches, "eval_every": run.eval_every,
        "created_at": run.created_at, "ended_at": run.ended_at, "worker": run.worker,
        "host": run.current.host if run.current else run.host, "task_id": run.task_id,
        "flower_url": flower_url(settings, run.task_id, host),
        "iteration": int(live["iteration"]) if live.get("iteration") else run.last_iteration,
        "avg_loss": finite(live.get("avg_loss")), "rate": finite(live.get("rate")),
        "updated_at": finite(live.get("updated_at")),
        "attempts": attempts, "checkpoints": checkpoints,
        "effective": effective_settings(run).to_dict(),
        "evaluations": [_eval_summary(e) for e in page["evaluations"]],
        "best": _eval_summary(page["best"]), "darknet_maps": page["darknet_maps"],
        "log": page["log"], "log_total": page["log_total"],
        "metrics_count": page["metrics_count"]}


def chart_payload(store: Store, run_id: str, since: str | None = None,
                  fold: int | None = FOLD_PER_REQUEST) -> dict:
    """The run's chart as SVG (farm.plot.runchart) with the decisions behind it;
    {"unchanged": true} when the caller's `since` version is still current."""
    run = store.runs.load(run_id)
    chart = runchart.for_run(store, run, fold=fold)
    drawn = [chart.n, chart.maps, chart.darknet_maps, run.state.value, run.message,
             [(a.number, a.outcome, a.last_iteration) for a in run.attempts]]
    version = hashlib.sha1(repr(drawn).encode()).hexdigest()[:16]
    if since == version:
        return {"unchanged": True, "version": version}
    return {"version": version, "n": chart.n, "behind": chart.behind,
            "iteration": chart.iteration, "eta": chart.eta,
            "svg": runchart.draw(chart).to_svg(), "chart": chart.summary()}


def chart_svg(store: Store, run_id: str) -> str:
    return runchart.draw(runchart.for_run(store, store.runs.load(run_id),
                                          fold=FOLD_PER_REQUEST)).to_svg()


def metrics_payload(store: Store, run_id: str, after: str, count: int) -> dict:
    """Raw metric entries of a run after stream id `after` (NotFound for no such run)."""
    store.runs.require(run_id)
    entries = store.progress.metrics_after(run_id, after, count)
    return {"entries": [
        {"id": i, "attempt": int(f["a"]), "iteration": int(f["i"]),
         "loss": finite(f.get("loss")), "avg_loss": finite(f.get("avg")), "rate": finite(f.get("rate")),
         "t": finite(f.get("t"))} for i, f in entries],
        "last": entries[-1][0] if entries else after}


def flower_url(settings: Settings, task_id: str | None, host: str = "") -> str | None:
    if not task_id:
        return None
    address = settings.flower_address
    if address in ("", "0.0.0.0", "::"):
        address = host or "127.0.0.1"
    return f"http://{address}:{settings.flower_port}/task/{task_id}"
