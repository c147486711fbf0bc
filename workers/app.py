"""The Celery app: every worker, beat, Flower and the CLI build it from the same settings.

Decisions (docs/celery.md): JSON only (pickle over a broker is remote code execution);
training acks early with prefetch disabled and holds a run lease in Redis instead of
relying on the broker's visibility timeout; the same visibility timeout everywhere.
Queues are named by role and by host (farm.queues).
"""
from __future__ import annotations

from celery import Celery
from celery.app.amqp import AMQP

from farm import settings as farm_settings
from farm.queues import AUGMENT, CPU, EVAL, GPU

ROUTES = {
    "farm.train": {"queue": GPU},
    "farm.reap": {"queue": CPU},
    "farm.dataset.synth*": {"queue": AUGMENT},
    "farm.dataset.*": {"queue": CPU},
    "farm.eval.*": {"queue": EVAL},
    "farm.sweep.*": {"queue": CPU},
    "farm.flow.*": {"queue": CPU},  # sent to a host's queue (host.<name>) by the CLI
    "farm.notify": {"queue": CPU},
}

TASK_MODULES = ["workers.tasks.train", "workers.tasks.dataset", "workers.tasks.eval",
                "workers.tasks.sweep", "workers.tasks.flow", "workers.tasks.notify",
                "workers.presence", "workers.reaping"]  # not tasks: a worker's signals
                                                         # (it says it is up, it reaps)


class FarmAMQP(AMQP):
    """What Flower hears when a task is sent (its `task-sent` event).

    Flower lists what its events describe, so two things are settled here, once for
    every sender (CLI, workers, beat):

    - Housekeeping stays out of the list. `farm.reap` and `farm.sweep.tick_all` run every
      few seconds on beat (412 ticks and 55 reaps buried 9 trainings in 15 minutes). They
      are declared with `send_events=False`, which Celery 5.7 honours on the worker
      (no received/started/succeeded events) but not when sending: `task_send_sent_event`
      is app-wide and Celery has no per-task `send_sent_event`. So their sent event is
      dropped here. They remain ordinary task messages (retried, logged by the worker,
      run wherever a `cpu` worker is), which beat needs no thread of its own for.
    - A task sent under a display name (`shadow`, e.g. `farm.train <run> <sweep>#<trial>`)
      is listed by it from the start: Celery puts the registered name in the sent event
      and the shadow only in the message, so a training still queued showed as a bare
      `farm.train`.
    """

    def as_task_v2(self, task_id, name, *args, **kwargs):
        message = super().as_task_v2(task_id, name, *args, **kwargs)
        if message.sent_event is None:
            return message
        task = self.app.tasks.get(name)
        if task is not None and not task.send_events:
            return message._replace(sent_event=None)
        shadow = message.headers.get("shadow")
        if shadow:
            message.sent_event["name"] = shadow
        return message


def make_app(settings: farm_settings.Settings | None = None) -> Celery:
    app = Celery("farm", include=_existing(TASK_MODULES), amqp=FarmAMQP)
    return configure(app, settings or farm_settings.load())


def configure(app: Celery, s: farm_settings.Settings) -> Celery:
    """Apply `s` to `app` (the CLI may resolve settings after the app was imported)."""
    url = s.effective_redis_url
    app.conf.update(
        broker_url=url, result_backend=url,
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_routes=ROUTES,
        task_default_queue=CPU,
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
        result_expires=s.result_expires,
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
            "sweep-tick-all": {"task": "farm.sweep.tick_all", "schedule": s.sweep_tick,
                               "options": {"expires": s.sweep_tick}},
        },
    )
    app.farm_settings = s
    return app


def _existing(modules: list[str]) -> list[str]:
    """Task modules present in this checkout (dataset tasks are optional on a GPU host)."""
    import importlib.util
    return [m for m in modules if importlib.util.find_spec(m) is not None]


app = make_app()
