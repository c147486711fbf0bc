"""URLs the farm is given (a webhook's), checked and masked for logs.

A leaf: farm.settings checks `notify_url` with it as it loads, and settings must import
nothing of the domain (farm.notify reaches the sweeps).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from farm.errors import ConfigError


def check_url(url: str) -> None:
    """ConfigError unless `url` is an http(s) URL with a host (the message masks it)."""
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError(f"notify_url {mask_url(url)} is not an http:// or https:// URL",
                          hint="for example https://hooks.example.com/farm")


def mask_url(url: str) -> str:
    """The URL for logs: scheme, host and port only. A password in the userinfo, and the
    secret many webhook services put in the path or query, never reach a log."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "<notify_url>"
    if ":" in host:
        host = f"[{host}]"
    user = "***@" if "@" in u.netloc else ""
    rest = "/…" if u.path.strip("/") or u.query else ""
    return f"{u.scheme}://{user}{host}{port}{rest}" if u.scheme else "<notify_url>"
