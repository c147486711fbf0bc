"""What every board route shares: the login check, reading query arguments (a bad one is
400 with what was wrong), Redis calls off the event loop (a missing run or sweep is 404,
Redis away is 503) and error answers (JSON for the API, text or a page otherwise)."""
from __future__ import annotations

import asyncio
import json
import re

import tornado.web

from dashboard.auth import COOKIE, Login, safe_next
from farm.errors import FarmUnavailable, NotFound
from farm.settings import Settings
from farm.store import Store

#: a Redis stream id, as the metrics API takes it in `?after=`
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


class Refused(tornado.web.HTTPError):
    """An answer with a message for the person (the status line keeps its standard
    reason: messages may hold any character)."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


class BaseHandler(tornado.web.RequestHandler):
    #: an HTML page: a browser without a login gets the login form instead of a challenge
    page = False
    #: the scrape token opens this route too (/metrics)
    scrape = False

    def prepare(self) -> None:
        if not self.authenticated():
            self.refuse_login()

    # -- login --------------------------------------------------------------------------
    @property
    def login(self) -> Login:
        return self.application.settings["farm_login"]

    def authenticated(self) -> bool:
        login = self.login
        cookie = self.get_signed_cookie(COOKIE, max_age_days=login.session_days)
        if cookie is not None and cookie.decode() == login.session:
            return True
        header = self.request.headers.get("Authorization")
        if login.basic_ok(header):
            if self.page:  # a browser that sent basic auth keeps a session from now on
                self.start_session()
            return True
        return self.scrape and login.bearer_ok(header)

    def start_session(self) -> None:
        self.set_signed_cookie(COOKIE, self.login.session,
                               expires_days=self.login.session_days, httponly=True,
                               samesite="Lax", secure=self.request.protocol == "https")

    def wants_html(self) -> bool:
        return "text/html" in self.request.headers.get("Accept", "")

    def refuse_login(self, error: str = "") -> None:
        self.set_status(401)
        if self.page and self.wants_html():
            self.render("login.html", next=safe_next(self.request.uri), error=error,
                        password_path=self.login.password_path)
            return
        # a page's own request (fetch) gets no challenge: the browser would answer it with
        # its password dialog; board.js goes to the login form instead
        if self.request.headers.get("Sec-Fetch-Mode") not in ("cors", "same-origin", "no-cors"):
            self.set_header("WWW-Authenticate", 'Basic realm="farm"')
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"login required: user farm, the password in {self.login.password_path}"
                    + ("; or the scrape token in " + self.login.metrics_token_path
                       + " as a bearer token" if self.scrape else "") + "\n")

    # -- arguments ----------------------------------------------------------------------
    def int_argument(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise Refused(400, f"?{name}={raw!r} is not a whole number "
                               f"(give {lo}..{hi})") from None
        if not lo <= value <= hi:
            raise Refused(400, f"?{name}={value} is out of range (give {lo}..{hi})")
        return value

    def stream_id_argument(self, name: str, default: str) -> str:
        raw = self.get_argument(name, default)
        if not STREAM_ID.match(raw):
            raise Refused(400, f"?{name}={raw!r} is not a stream id like 1700000000000-0 "
                               f"(the `last` of the previous answer; 0-0 from the start)")
        return raw

    # -- farm ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.application.settings["farm_store"]

    @property
    def farm_settings(self) -> Settings:
        return self.application.settings["farm_settings"]

    async def blocking(self, fn, *args):
        """Redis calls off the event loop, on the board's worker threads."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.application.settings["farm_pool"], fn, *args)
        except NotFound as e:
            raise Refused(404, e.message) from None
        except FarmUnavailable as e:
            raise Refused(503, e.message) from None

    # -- answers ------------------------------------------------------------------------
    def write_json(self, data) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(data, separators=(",", ":"), allow_nan=False, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        message = getattr(error, "message", None) or self._reason
        if self.request.path.startswith("/api/"):
            self.write_json({"error": message})
        elif self.page and self.wants_html():
            self.render("error.html", status=status_code, message=message)
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{status_code}: {message}\n")

    def render_page(self, template: str, **values) -> None:
        self.set_header("Cache-Control", "no-store")
        self.render(template, **values)
