"""Who may look at the board, and how each kind of client proves it.

- A browser logs in once with a form and then carries a session cookie (signed with a
  key kept in the data dir, HttpOnly, SameSite=Lax, Secure when served over HTTPS). The
  cookie names a fingerprint of the password, so changing the password logs everyone out.
- Scripts and API clients send HTTP basic (user `farm`, Flower's password), as before.
- Prometheus sends a bearer token of its own (`<data_dir>/metrics.token`), which opens
  /metrics and nothing else: a scraper never holds the password.

A browser asking for a page without a login gets the login form (status 401, no basic
challenge, so no browser dialog); everything else gets a basic challenge. A page opened
from a URL with credentials in it (`http://farm:PASSWORD@head:5556/`) logs itself in
from the form's script and reloads without them, so its own requests never carry a URL
with credentials (which browsers refuse to fetch).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from farm.credentials import BOARD_SECRET, FLOWER_PASSWORD, METRICS_TOKEN, ensure_secret, \
    read_secret
from farm.settings import Settings

USER = "farm"
COOKIE = "farm_session"
#: seconds a wrong password waits before its answer (guessing costs time)
WRONG_PASSWORD_DELAY = 1.0


@dataclass(frozen=True)
class Login:
    password: str
    password_path: str
    cookie_secret: str
    metrics_token: str
    metrics_token_path: str
    session_days: float

    @classmethod
    def load(cls, settings: Settings, password: str | None = None) -> "Login":
        """The password (Flower's, made by `farm up`); the cookie key and the scrape token
        are made here the first time."""
        data = Path(settings.data_dir)
        path = data / FLOWER_PASSWORD
        if password is None:
            password = read_secret(path, hint="`farm up` creates it (Flower's login)")
        data.mkdir(parents=True, exist_ok=True)
        return cls(password=password, password_path=str(path),
                   cookie_secret=ensure_secret(data / BOARD_SECRET, 32)[0],
                   metrics_token=ensure_secret(data / METRICS_TOKEN, 24)[0],
                   metrics_token_path=str(data / METRICS_TOKEN),
                   session_days=settings.board_session_days)

    def password_ok(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self.password.encode())

    def basic_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), USER.encode()) & self.password_ok(password)

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.metrics_token.encode())

    @property
    def session(self) -> str:
        """What a valid session cookie holds: the user and a fingerprint of the password."""
        digest = hashlib.sha256(f"{self.cookie_secret}:{self.password}".encode()).hexdigest()
        return f"{USER}:{digest[:32]}"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this board, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or urlparse(target).netloc:
        return "/"
    return target


async def wrong_password_pause() -> None:
    await asyncio.sleep(WRONG_PASSWORD_DELAY)
