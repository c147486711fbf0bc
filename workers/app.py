"""The Celery app: every worker, beat, Flower and the CLI build it from the same settings.

Decisions (docs/celery.md): JSON only (pickle over a broker is remote code execution);
training acks early with prefetch disabled and holds a run lease in Redis instead of
relying on the broker's visibility timeout; the same visibility timeout everywhere.
Queues are named by role (`gpu`, `cpu`, `augment`, `eval`) and by host (`host.<name>`).
"""
from __future__ import annotations

from celery import Celery

from farm import settings as farm_settings

ROUTES = {
    "farm.train": {"queue": "gpu"},
    "farm.reap": {"queue": "cpu"},
    "farm.dataset.synth*": {"queue": "augment"},
    "farm.dataset.*": {"queue": "cpu"},
    "farm.eval.*": {"queue": "eval"},
    "farm.sweep.*": {"queue": "cpu"},
    "farm.flow.*": {"queue": "cpu"},  # sent to a host's queue (host.<name>) by the CLI
}

TASK_MODULES = ["workers.tasks.train", "workers.tasks.dataset", "workers.tasks.eval",
                "workers.tasks.sweep", "workers.tasks.flow"]


def host_queue(name: str) -> str:
    return f"host.{name}"


def make_app(settings: farm_settings.Settings | None = None) -> Celery:
    app = Celery("farm", include=_existing(TASK_MODULES))
    return configure(app, settings or farm_settings.load())


def configure(app: Celery, s: farm_settings.Settings) -> Celery:
    """Apply `s` to `app` (the CLI may resolve settings after the app was imported)."""
    url = s.effective_redis_url
    app.conf.update(
        broker_url=url, result_backend=url,
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_routes=ROUTES,
        task_default_queue="cpu",
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        broker_transport_options={"visibility_timeout": s.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": s.visibility_timeout},
        visibility_timeout=s.visibility_timeout,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_extended=True,
        result_expires=7 * 86400,
        result_backend_always_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap-expired-leases": {"task": "farm.reap", "schedule": s.reaper_interval,
                                    "options": {"expires": s.reaper_interval}},
            # trials normally start from the end of the previous one (no GPU idle gap);
            # this tick applies early stopping and recovers after a controller restart
            "sweep-tick-all": {"task": "farm.sweep.tick_all", "schedule": 2.0,
                               "options": {"expires": 2.0}},
        },
    )
    app.farm_settings = s
    return app


def _existing(modules: list[str]) -> list[str]:
    """Task modules present in this checkout (dataset tasks are optional on a GPU host)."""
    import importlib.util
    return [m for m in modules if importlib.util.find_spec(m) is not None]


app = make_app()
