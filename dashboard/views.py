"""The board's routes: HTML pages (filled in by static/board.js from the API), the JSON
API, Prometheus metrics, the login and static files. The data functions they call are
in board.py (runs), sweeps.py and metrics.py."""
from __future__ import annotations

import tornado.web

from dashboard import board, metrics, sweeps
from dashboard.auth import COOKIE, safe_next, wrong_password_pause
from dashboard.base import BaseHandler, Refused

# -- login ---------------------------------------------------------------------------------


class LoginView(BaseHandler):
    """GET: the form. POST: check the password, start a session, go where the person
    was going. The form works without a login, of course."""

    page = True

    def prepare(self) -> None:
        pass

    def get(self) -> None:
        if self.authenticated():
            self.redirect(safe_next(self.get_argument("next", "/")))
            return
        self.render("login.html", next=safe_next(self.get_argument("next", "/")), error="",
                    password_path=self.login.password_path)

    async def post(self) -> None:
        target = safe_next(self.get_argument("next", "/"))
        if not self.login.password_ok(self.get_argument("password", "")):
            await wrong_password_pause()
            self.set_status(401)
            self.render("login.html", next=target, error="wrong password",
                        password_path=self.login.password_path)
            return
        self.start_session()
        self.redirect(target)


class LogoutView(BaseHandler):
    page = True

    def post(self) -> None:
        self.clear_cookie(COOKIE)
        self.redirect("/login")


# -- runs ----------------------------------------------------------------------------------


class RunsView(BaseHandler):
    page = True

    def get(self) -> None:
        self.render_page("runs.html")


class RunView(BaseHandler):
    page = True

    async def get(self, run_id: str) -> None:
        run = await self.blocking(self.store.runs.find, run_id)
        self.render_page("run.html", run_id=run.id)


class RunsApi(BaseHandler):
    async def get(self) -> None:
        self.write_json(await self.blocking(board.runs_payload, self.store))


class RunApi(BaseHandler):
    async def get(self, run_id: str) -> None:
        self.write_json(await self.blocking(board.run_payload, self.store, run_id,
                                            self.farm_settings, self.request.host_name))


class ChartApi(BaseHandler):
    """The run's chart as SVG with its model's decisions: `?since=<version>` answers
    {"unchanged": true} while nothing new was drawn."""

    async def get(self, run_id: str) -> None:
        self.write_json(await self.blocking(board.chart_payload, self.store, run_id,
                                            self.get_argument("since", None)))


class ChartSvg(BaseHandler):
    """The same chart as an image (`/runs/<id>/chart.svg`, to save or embed)."""

    async def get(self, run_id: str) -> None:
        svg = await self.blocking(board.chart_svg, self.store, run_id)
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "no-store")
        self.write(svg)


class MetricsApi(BaseHandler):
    """Raw metric entries after a stream id (bounded): `?after=<id>&count=<n>`."""

    async def get(self, run_id: str) -> None:
        after = self.stream_id_argument("after", "0-0")
        count = self.int_argument("count", 1000, 1, 5000)
        self.write_json(await self.blocking(board.metrics_payload, self.store, run_id, after,
                                            count))


class LogApi(BaseHandler):
    async def get(self, run_id: str) -> None:
        lines = self.int_argument("lines", board.LOG_LINES, 1, 2000)
        tail, total = await self.blocking(self.store.progress.log_tail, run_id, lines)
        self.write_json({"lines": tail, "total": total})


# -- sweeps --------------------------------------------------------------------------------


class SweepsView(BaseHandler):
    page = True

    async def get(self) -> None:
        self.render_page("sweeps.html",
                         sweeps=await self.blocking(sweeps.sweeps_payload, self.store))


class SweepsApi(BaseHandler):
    async def get(self) -> None:
        limit = self.int_argument("limit", sweeps.LIST_LIMIT, 1, 500)
        self.write_json({"sweeps": await self.blocking(sweeps.sweeps_payload, self.store,
                                                       limit)})


class SweepView(BaseHandler):
    page = True

    async def get(self, sweep_id: str) -> None:
        sweep = await self.blocking(sweeps.find, self.store, sweep_id)
        self.render_page("sweep.html", sweep_id=sweep.id, name=sweep.name or sweep.id)


class SweepApi(BaseHandler):
    """One sweep: counts by state, a page of its leaderboard (`?page=1&per=25`) and the
    overlay of that page's trials as SVG."""

    async def get(self, sweep_id: str) -> None:
        page = self.int_argument("page", 1, 1, 1_000_000)
        per = self.int_argument("per", sweeps.PER_PAGE, 1, sweeps.MAX_PER_PAGE)
        self.write_json(await self.blocking(sweeps.sweep_payload, self.store, sweep_id,
                                            page, per))


# -- the rest ------------------------------------------------------------------------------


class PrometheusHandler(BaseHandler):
    scrape = True

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.write(await self.blocking(metrics.prometheus_text, self.store,
                                       self.farm_settings,
                                       self.application.settings["farm_watch"]))


class StaticFiles(tornado.web.StaticFileHandler, BaseHandler):
    """Static files, behind the login like everything else."""

    def prepare(self) -> None:
        BaseHandler.prepare(self)


class Missing(BaseHandler):
    """Any other URL: 404 (after the login, like every route)."""

    page = True

    def get(self, *args) -> None:
        raise Refused(404, f"nothing at {self.request.path}")
