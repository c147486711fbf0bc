"""The farm's generated secrets: made once, kept in the data dir, readable by the owner only.

Flower's password, the board's cookie key and the Prometheus scrape token are files of
one line (mode 0600) rather than settings, so they never travel on a command line or
through a config file someone might share.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from farm.errors import FarmUnavailable

FLOWER_PASSWORD = "flower.password"   #: the login of Flower and the board (user `farm`)
BOARD_SECRET = "board.secret"          #: signs the board's session cookies
METRICS_TOKEN = "metrics.token"        #: Prometheus' bearer token for the board's /metrics


def ensure_secret(path: str | os.PathLike, nbytes: int = 18) -> tuple[str, bool]:
    """The secret in `path`, made when there is none yet (mode 0600 from the start, and
    whole: it is written aside and linked into place, so a process reading it at the same
    moment never sees it empty); True when it was just made here."""
    path = Path(path)
    if path.exists():
        return read_secret(path), False
    value = secrets.token_urlsafe(nbytes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return read_secret(path), False
    finally:
        os.unlink(tmp)
    return value, True


def read_secret(path: str | os.PathLike, hint: str = "`farm up` creates it") -> str:
    path = Path(path)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise FarmUnavailable(f"{path} does not exist",
                              hint=f"{hint}; or write one line with a secret there, "
                                   "mode 0600") from None
    if not value:
        raise FarmUnavailable(f"{path} is empty", hint="write the secret on its first line")
    return value
