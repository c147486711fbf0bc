"""Celery tasks: thin wrappers that call farm/ with the app's settings."""
from __future__ import annotations

from farm.store import Store


def store() -> Store:
    """The farm's state, as configured for this worker."""
    from workers.app import app
    s = app.farm_settings
    return Store(s.effective_redis_url, log_tail_lines=s.log_tail_lines,
                 patience=s.redis_patience)
