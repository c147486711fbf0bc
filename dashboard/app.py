"""The board's one route table, its background work, and serving it (`farm board`,
`python -m dashboard`, a child of `farm up`). See board.py for what each route shows."""
from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tornado.ioloop
import tornado.web

from dashboard import views as v
from dashboard.auth import USER, Login
from dashboard.board import RUNS_LIMIT
from dashboard.metrics import CeleryWatch
from farm.runs.chart import update_chart
from farm.errors import FarmError, PortInUse
from farm.runs.model import RunState
from farm.settings import Settings
from farm.store import Store

HERE = Path(__file__).resolve().parent
FOLD_EVERY_MS = 2000  #: how often the charts of running runs are folded


def make_app(settings: Settings, *, store: Store | None = None, password: str | None = None,
             watch: CeleryWatch | None = None) -> tornado.web.Application:
    """`password`: instead of the one in the data dir (tests, benchmarks)."""
    store = store or Store(settings.effective_redis_url, log_tail_lines=settings.log_tail_lines)
    login = Login.load(settings, password)
    rid = r"([A-Za-z0-9_.-]+)"
    return tornado.web.Application(
        [(r"/login", v.LoginView), (r"/logout", v.LogoutView),
         (r"/", v.RunsView), (rf"/runs/{rid}", v.RunView), (rf"/runs/{rid}/chart.svg", v.ChartSvg),
         (r"/api/runs", v.RunsApi), (rf"/api/runs/{rid}", v.RunApi),
         (rf"/api/runs/{rid}/chart", v.ChartApi), (rf"/api/runs/{rid}/metrics", v.MetricsApi),
         (rf"/api/runs/{rid}/log", v.LogApi),
         (r"/sweeps", v.SweepsView), (rf"/sweeps/{rid}", v.SweepView),
         (r"/api/sweeps", v.SweepsApi), (rf"/api/sweeps/{rid}", v.SweepApi),
         (r"/metrics", v.PrometheusHandler),
         (r"/static/(.*)", v.StaticFiles, {"path": str(HERE / "static")})],
        default_handler_class=v.Missing,
        template_path=str(HERE / "templates"), cookie_secret=login.cookie_secret,
        xsrf_cookies=True, farm_store=store, farm_settings=settings, farm_login=login,
        farm_watch=watch or CeleryWatch(settings), farm_pool=ThreadPoolExecutor(4, "board"),
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
            self.running = [row["run"]["id"] for row in self.store.board.runs_list(RUNS_LIMIT)
                            if row["run"]["state"] == RunState.RUNNING.value]
        self.ticks += 1
        for run_id in self.running:
            update_chart(self.store.progress, run_id, max_entries=20000)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(settings: Settings, *, address: str | None = None, port: int | None = None) -> int:
    """Run the board in the foreground until Ctrl-C or SIGTERM."""
    app = make_app(settings)
    asyncio.run(_serve(app, address or settings.flower_address, port or settings.board_port))
    return 0


async def _serve(app: tornado.web.Application, address: str, port: int) -> None:
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
    login: Login = app.settings["farm_login"]
    print(f"farm board on http://{address}:{port}/ (login {USER} / {login.password_path}; "
          f"Prometheus: bearer token in {login.metrics_token_path})", flush=True)
    await stop.wait()
    callback.stop()
    server.stop()
    folder.close()
    app.settings["farm_watch"].close()


def _quietly(fn, *args):
    try:
        return fn(*args)
    except FarmError:
        return None  # Redis away for a moment: the next round tries again
