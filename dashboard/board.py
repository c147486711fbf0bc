"""The farm board: runs, a live chart per run, the attempt lineage, checkpoints with their
mAP, the log tail, a link to the task in Flower; a JSON API and Prometheus metrics.

A tornado app behind the same login as Flower (HTTP basic, user `farm`, the password in
`<data_dir>/flower.password`): every request without it gets 401, pages, API, static files
and /metrics alike.

It must stay fast with big runs: the chart is read from the folded chart state
(farm.chart; a few thousand buckets however long the run), the run page's data comes from
one pipelined Redis round trip, the runs list from two. A background callback keeps the
charts of running runs folded, so a page never waits for a backlog.

Routes (the API returns what the pages draw):
    /                           runs list          /api/runs
    /runs/<id>                  run page           /api/runs/<id>
                                                   /api/runs/<id>/chart[?since=version]
                                                   /api/runs/<id>/metrics?after=<stream id>
                                                   /api/runs/<id>/log?lines=200
    /metrics                    Prometheus text
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import tornado.escape
import tornado.ioloop
import tornado.web

from farm.chart import iterations_per_second, update_chart
from farm.errors import FarmError, FarmUnavailable, NotFound, PortInUse
from farm.runs.model import RunState
from farm.settings import Settings
from farm.state import Store

HERE = Path(__file__).resolve().parent
USER = "farm"
RUNS_LIMIT = 500
LOG_LINES = 200
FOLD_EVERY_MS = 2000
FOLD_PER_REQUEST = 2000  # entries a chart request folds itself; the rest in the background


def read_password(data_dir: str) -> str:
    path = Path(data_dir) / "flower.password"
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        raise FarmUnavailable(f"no login for the board: {path} does not exist",
                              hint="`farm up` creates it (Flower's login); or write one line "
                                   "with a password there, mode 0600") from None
    if not password:
        raise FarmUnavailable(f"{path} is empty", hint="write the password on its first line")
    return password


# ---------------------------------------------------------------------------------------
# Data (plain functions: the handlers, the tests and bench/bench_board.py call them)


def _f(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _eval_summary(e: dict | None) -> dict | None:
    if not e:
        return None
    return {**{k: e.get(k) for k in ("iteration", "map", "evaluator", "precision", "recall",
                                     "f1", "tp", "fp", "fn", "avg_iou", "seconds", "error",
                                     "attempt", "worker", "evaluated_at", "best_weights")},
            **_screens_maps(e)}


def _screens_maps(e: dict | None) -> dict:
    """The screens mAP beside the tile mAP (farm.eval.screens), when the run has one."""
    screens = (e or {}).get("screens")
    if not isinstance(screens, dict):
        return {}
    return {"screens_map": screens.get("map"), "screens_error": screens.get("error")}


def runs_payload(store: Store, limit: int = RUNS_LIMIT) -> dict:
    rows = []
    for row in store.board_runs(limit):
        run, live, best = row["run"], row["live"], row["best"]
        attempts = run.get("attempts") or []
        iteration = live.get("iteration")
        rows.append({
            "id": run["id"], "state": run["state"], "message": run.get("message", ""),
            "host": attempts[-1]["host"] if attempts else run.get("host"),
            "worker": run.get("worker"),
            "iteration": int(iteration) if iteration else _last_iteration(attempts),
            "max_batches": run.get("max_batches"), "avg_loss": _f(live.get("avg_loss")),
            "best_map": best.get("map") if best else None,
            "best_screens_map": _screens_maps(best).get("screens_map"),
            "best_iteration": best.get("iteration") if best else None,
            "last_map": (row["last_evaluation"] or {}).get("map"),
            "attempts": len(attempts), "created_at": run.get("created_at"),
            "updated_at": _f(live.get("updated_at")), "sweep": run.get("sweep")})
    return {"runs": rows, "generated_at": time.time()}


def _last_iteration(attempts: list[dict]) -> int:
    return max((a["last_iteration"] for a in attempts if a.get("last_iteration") is not None),
               default=0)


def run_payload(store: Store, run_id: str, settings: Settings, host: str = "") -> dict:
    page = store.board_run(run_id, LOG_LINES)
    run, live = page["run"], page["live"]
    evals = {e["iteration"]: e for e in page["evaluations"]}
    attempts = []
    for a in run.attempts:
        d = asdict(a)
        d["outcome"] = a.outcome.value if a.outcome else None
        attempts.append({k: d[k] for k in (
            "number", "reason", "changes", "hyper", "outcome", "message", "start_iteration",
            "last_iteration", "started_at", "ended_at", "host", "exit_code",
            "first_bad_iteration", "log_path")})
    checkpoints = [{"iteration": c.iteration, "attempt": c.attempt, "finite": c.finite,
                    "path": c.path, "evaluation": _eval_summary(evals.get(c.iteration))}
                   for c in run.checkpoints]
    return {
        "id": run.id, "state": run.state.value, "message": run.message, "data": run.data,
        "cfg": run.cfg, "weights": run.weights, "overrides": run.overrides,
        "max_batches": run.max_batches, "eval_every": run.eval_every,
        "created_at": run.created_at, "ended_at": run.ended_at, "worker": run.worker,
        "host": run.current.host if run.current else run.host, "task_id": run.task_id,
        "flower_url": flower_url(settings, run.task_id, host),
        "iteration": int(live["iteration"]) if live.get("iteration") else run.last_iteration,
        "avg_loss": _f(live.get("avg_loss")), "rate": _f(live.get("rate")),
        "updated_at": _f(live.get("updated_at")),
        "attempts": attempts, "checkpoints": checkpoints,
        "evaluations": [_eval_summary(e) for e in page["evaluations"]],
        "best": _eval_summary(page["best"]), "darknet_maps": page["darknet_maps"],
        "log": page["log"], "log_total": page["log_total"],
        "metrics_count": page["metrics_count"]}


def chart_payload(store: Store, run_id: str, since: str | None = None,
                  fold: int | None = FOLD_PER_REQUEST) -> dict:
    """The folded chart with the mAP points and restarts; {"unchanged": true} when the
    caller's `since` version is still current."""
    run = store.load_run(run_id)
    state = update_chart(store, run_id, max_entries=fold)
    evals = [[e["iteration"], e["map"]] for e in store.evaluations(run_id)
             if e.get("map") is not None]
    version = f"{state['n']}:{len(evals)}:{len(run.attempts)}"
    if since == version:
        return {"unchanged": True, "version": version}
    return {"version": version, "n": state["n"], "size": state["size"],
            "behind": state.get("behind", 0), "buckets": state["buckets"],
            "evaluations": evals,
            "darknet_maps": [[m.get("iteration"), m.get("map")] for m in store.maps(run_id)
                             if m.get("map") is not None],
            "attempts": [{"number": a.number, "reason": a.reason, "changes": a.changes,
                          "start_iteration": a.start_iteration} for a in run.attempts],
            "iterations_per_second": iterations_per_second(state)}


def flower_url(settings: Settings, task_id: str | None, host: str = "") -> str | None:
    if not task_id:
        return None
    address = settings.flower_address
    if address in ("", "0.0.0.0", "::"):
        address = host or "127.0.0.1"
    return f"http://{address}:{settings.flower_port}/task/{task_id}"


def prometheus_text(store: Store) -> str:
    """Runs by state, iterations per second and last/best mAP of each run."""
    rows = store.board_runs(RUNS_LIMIT)
    by_state = {s.value: 0 for s in RunState}
    out = ["# HELP farm_runs Runs by state (the newest runs).", "# TYPE farm_runs gauge"]
    for row in rows:
        by_state[row["run"]["state"]] = by_state.get(row["run"]["state"], 0) + 1
    out += [f'farm_runs{{state="{s}"}} {n}' for s, n in by_state.items()]
    running = [row for row in rows if row["run"]["state"] == RunState.RUNNING.value]
    out += ["# HELP farm_run_iterations_per_second Training speed over the last samples.",
            "# TYPE farm_run_iterations_per_second gauge"]
    for row in running:
        state, _ = store.chart_state(row["run"]["id"])
        out.append(f'farm_run_iterations_per_second{{{_labels(row)}}} '
                   f'{iterations_per_second(state):.4g}')
    out += ["# HELP farm_run_iteration Last training iteration of a run.",
            "# TYPE farm_run_iteration gauge"]
    out += [f'farm_run_iteration{{{_labels(row)}}} {row["live"]["iteration"]}'
            for row in rows if row["live"].get("iteration")]
    for name, key, what in (("last_map", "last_evaluation", "of the newest evaluated checkpoint"),
                            ("best_map", "best", "best so far")):
        out += [f"# HELP farm_run_{name} mAP@0.50 (fraction) {what}.",
                f"# TYPE farm_run_{name} gauge"]
        out += [f'farm_run_{name}{{{_labels(row)}}} {row[key]["map"]:.6g}'
                for row in rows if row[key] and row[key].get("map") is not None]
    return "\n".join(out) + "\n"


def _labels(row: dict) -> str:
    run = row["run"]
    attempts = run.get("attempts") or []
    host = str(attempts[-1]["host"] if attempts else run.get("host", "")).replace('"', "")
    return f'run="{run["id"]}",host="{host}"'


# ---------------------------------------------------------------------------------------
# HTTP


class BaseHandler(tornado.web.RequestHandler):
    """Login first, for every route; FarmErrors become JSON or a short page."""

    def prepare(self) -> None:
        if not self.application.settings["farm_auth"](self.request.headers.get("Authorization")):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="farm"')
            self.finish("login required (user farm, the password in <data_dir>/flower.password)\n")

    @property
    def store(self) -> Store:
        return self.application.settings["farm_store"]

    @property
    def farm_settings(self) -> Settings:
        return self.application.settings["farm_settings"]

    async def blocking(self, fn, *args):
        """Redis calls off the event loop, on the board's worker threads; a missing run is
        404, Redis away is 503."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.application.settings["farm_pool"], fn, *args)
        except NotFound as e:
            raise tornado.web.HTTPError(404, reason=e.message) from None
        except FarmUnavailable as e:
            raise tornado.web.HTTPError(503, reason=e.message) from None

    def write_json(self, data) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(data, separators=(",", ":"), allow_nan=False, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        message = self._reason
        if self.request.path.startswith("/api/"):
            self.write_json({"error": message})
        else:
            self.write(f"{status_code}: {tornado.escape.xhtml_escape(message)}\n")


class RunsView(BaseHandler):
    def get(self) -> None:
        self.render("runs.html")


class RunView(BaseHandler):
    async def get(self, run_id: str) -> None:
        run = await self.blocking(self.store.find_run, run_id)
        self.render("run.html", run_id=run.id)


class RunsApi(BaseHandler):
    async def get(self) -> None:
        self.write_json(await self.blocking(runs_payload, self.store))


class RunApi(BaseHandler):
    async def get(self, run_id: str) -> None:
        self.write_json(await self.blocking(run_payload, self.store, run_id,
                                            self.farm_settings, self.request.host_name))


class ChartApi(BaseHandler):
    async def get(self, run_id: str) -> None:
        self.write_json(await self.blocking(chart_payload, self.store, run_id,
                                            self.get_argument("since", None)))


class MetricsApi(BaseHandler):
    """Raw metric entries after a stream id (bounded): `?after=<id>&count=<n>`."""

    async def get(self, run_id: str) -> None:
        after = self.get_argument("after", "0-0")
        count = max(1, min(int(self.get_argument("count", "1000")), 5000))
        entries = await self.blocking(self.store.metrics_after, run_id, after, count)
        self.write_json({"entries": [
            {"id": i, "attempt": int(f["a"]), "iteration": int(f["i"]),
             "loss": _f(f.get("loss")), "avg_loss": _f(f.get("avg")), "rate": _f(f.get("rate")),
             "t": _f(f.get("t"))} for i, f in entries],
            "last": entries[-1][0] if entries else after})


class LogApi(BaseHandler):
    async def get(self, run_id: str) -> None:
        lines = max(1, min(int(self.get_argument("lines", str(LOG_LINES))), 2000))
        tail, total = await self.blocking(self.store.log_tail, run_id, lines)
        self.write_json({"lines": tail, "total": total})


def sweeps_payload(store: Store, limit: int = 20) -> list[dict]:
    """Recent sweeps with their leaderboards, newest first."""
    from farm.sweeps.service import leaderboard_of
    from farm.sweeps.store import SweepStore
    out = []
    for sw in SweepStore(store).recent(limit):
        _, spec, rows = leaderboard_of(store, sw.id)
        out.append({"sweep": sw.to_dict(), "objective": spec.objective,
                    "leaderboard": [r.to_dict() for r in rows]})
    return out


class SweepsView(BaseHandler):
    async def get(self) -> None:
        self.render("sweeps.html", sweeps=await self.blocking(sweeps_payload, self.store))


class SweepsApi(BaseHandler):
    async def get(self) -> None:
        self.write_json(await self.blocking(sweeps_payload, self.store))


class PrometheusHandler(BaseHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.write(await self.blocking(prometheus_text, self.store))


class StaticFiles(tornado.web.StaticFileHandler, BaseHandler):
    """Static files, behind the login like everything else."""

    def prepare(self) -> None:
        BaseHandler.prepare(self)


def basic_auth(password: str):
    expected = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()

    def check(header: str | None) -> bool:
        return bool(header) and hmac.compare_digest(header.encode(), expected.encode())
    return check


def make_app(settings: Settings, *, store: Store | None = None,
             password: str | None = None) -> tornado.web.Application:
    store = store or Store(settings.effective_redis_url, log_tail_lines=settings.log_tail_lines)
    password = password if password is not None else read_password(settings.data_dir)
    rid = r"([A-Za-z0-9_.-]+)"
    return tornado.web.Application(
        [(r"/", RunsView), (rf"/runs/{rid}", RunView), (r"/api/runs", RunsApi),
         (rf"/api/runs/{rid}", RunApi), (rf"/api/runs/{rid}/chart", ChartApi),
         (rf"/api/runs/{rid}/metrics", MetricsApi), (rf"/api/runs/{rid}/log", LogApi),
         (r"/sweeps", SweepsView), (r"/api/sweeps", SweepsApi),
         (r"/metrics", PrometheusHandler),
         (r"/static/(.*)", StaticFiles, {"path": str(HERE / "static")})],
        template_path=str(HERE / "templates"), farm_store=store, farm_settings=settings,
        farm_auth=basic_auth(password), farm_pool=ThreadPoolExecutor(4, "board"),
        compress_response=True)


class ChartFolder:
    """Keeps the charts of running runs folded, so that a run page never waits for a
    backlog: `tick()` every FOLD_EVERY_MS, one fold at a time on a thread of its own;
    which runs are running is looked up every 5th tick."""

    def __init__(self, store: Store):
        self.store = store
        self.pool = ThreadPoolExecutor(1, "fold")
        self.job = None
        self.running: list[str] = []
        self.ticks = 0

    def tick(self) -> None:
        if self.job is None or self.job.done():
            self.job = self.pool.submit(_quietly, self.fold)

    def fold(self) -> None:
        if self.ticks % 5 == 0:
            self.running = [row["run"]["id"] for row in self.store.board_runs(RUNS_LIMIT)
                            if row["run"]["state"] == RunState.RUNNING.value]
        self.ticks += 1
        for run_id in self.running:
            update_chart(self.store, run_id, max_entries=20000)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(settings: Settings, *, address: str | None = None, port: int | None = None) -> int:
    """Run the board in the foreground until Ctrl-C or SIGTERM."""
    app = make_app(settings)
    asyncio.run(_serve(app, address or settings.flower_address, port or settings.board_port,
                       Path(settings.data_dir) / "flower.password"))
    return 0


async def _serve(app: tornado.web.Application, address: str, port: int, login: Path) -> None:
    import signal
    try:
        server = app.listen(port, address)
    except OSError as e:
        raise PortInUse(f"the board cannot listen on {address}:{port}: {e.strerror}",
                        hint="set FARM_BOARD_PORT or pass --port") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    folder = ChartFolder(app.settings["farm_store"])
    callback = tornado.ioloop.PeriodicCallback(folder.tick, FOLD_EVERY_MS)
    callback.start()
    print(f"farm board on http://{address}:{port}/ (login {USER} / {login})", flush=True)
    await stop.wait()
    callback.stop()
    server.stop()
    folder.close()


def _quietly(fn, *args):
    try:
        return fn(*args)
    except FarmError:
        return None  # Redis away for a moment: the next round tries again
