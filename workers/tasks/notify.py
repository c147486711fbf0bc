"""Notifications (farm.notify): each event POSTed once to `notify_url` from a `cpu`
worker, retried with backoff.

A task on the `cpu` queue rather than a thread in the process that saw the event: the
training task only claims the event and writes its message to the broker (two Redis
round trips, about 8 ms; it never waits on the receiver), the event outlives the worker that saw it (a host going away may be that
worker's own trouble), and the retries wait in the broker, not in a GPU worker. Task
events are off (workers.app.FarmAMQP): Flower lists the farm's work, not its mail.

What sends events: `farm.train` when its run fails (run_failed), whoever closes or
cancels a sweep (sweep_ended), and any task that meets HostUnreachable (the Celery
retry/failure signals below: every task that reaches another host, in one place).
"""
from __future__ import annotations

import logging

from celery import signals

from farm import notify
from farm.errors import DeliveryFailed, HostUnreachable
from farm.urls import mask_url
from workers.app import app
from workers.tasks import store

log = logging.getLogger(__name__)

#: Tasks whose first argument is a run id (named in a host.away event).
RUN_TASKS = ("farm.train", "farm.eval.checkpoint")


def emit(event: notify.Event) -> None:
    """Queue `event` unless it was queued before. Never raises: a notification must not
    break or hold up the work that saw it."""
    s = app.farm_settings
    if not s.notify_url:
        return
    try:
        if store().notices.claim(event.id, event.kind):
            deliver.apply_async(args=[event.payload(s.host_name)])
    except Exception:  # noqa: BLE001 - Redis or the broker: the work goes on
        log.exception("could not queue notification %s", event.id)


def run_failed(run) -> None:
    emit(notify.run_failed(run))


def sweep_ended(sweep_id: str) -> None:
    """The sweep has ended (closed by a tick, or cancelled): tell, with its leaderboard."""
    if not app.farm_settings.notify_url:
        return
    try:
        from farm.sweeps.service import leaderboard_of
        sweep, spec, rows = leaderboard_of(store(), sweep_id)
    except Exception:  # noqa: BLE001 - as emit
        log.exception("sweep %s: could not read it to notify its end", sweep_id)
        return
    emit(notify.sweep_ended(sweep, spec, rows))


@app.task(name="farm.notify", bind=True, send_events=False, max_retries=None)
def deliver(self, payload: dict) -> dict:
    """POST one event; on failure try again after notify_backoff, 2x, 4x … (at most
    notify_retries times), then give up with a log line. Never posts an event twice:
    one already delivered, or being posted by another worker, is left alone."""
    s = app.farm_settings
    event_id = payload["id"]
    if not s.notify_url:
        log.warning("notification %s dropped: this worker has no notify_url", event_id)
        return {"id": event_id, "state": "dropped"}
    where = mask_url(s.notify_url)
    ledger = store().notices
    if not ledger.begin(event_id, s.notify_timeout + 30):
        if ledger.record(event_id).get("state") == "delivered":
            return {"id": event_id, "state": "delivered"}
        raise self.retry(countdown=s.notify_timeout + 30)  # in flight elsewhere
    try:
        status = notify.post(s.notify_url, payload, s.notify_timeout)
    except DeliveryFailed as e:
        final = self.request.retries >= s.notify_retries
        tries = ledger.tried(event_id, e.message, final=final)
        if final:
            log.error("notification %s to %s given up after %d tries: %s", event_id, where,
                      tries, e.message)
            return {"id": event_id, "state": "gave_up", "tries": tries}
        wait = notify.backoff(tries, s.notify_backoff, s.notify_backoff_max)
        log.warning("notification %s to %s failed (try %d): %s; next try in %.0f s",
                    event_id, where, tries, e.message, wait)
        raise self.retry(countdown=wait)  # counted here, not by Celery (max_retries=None)
    ledger.delivered(event_id, status)
    log.info("notification %s delivered to %s (HTTP %d)", event_id, where, status)
    return {"id": event_id, "state": "delivered", "status": status}


# ---------------------------------------------------------------------------------------
# A host goes away: whatever task met it


@signals.task_retry.connect
def _on_retry(sender=None, request=None, reason=None, **_) -> None:
    exc = getattr(reason, "exc", None)
    if isinstance(exc, HostUnreachable):
        _host_away(exc, sender, getattr(request, "id", None), getattr(request, "args", None))


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, args=None, **_) -> None:
    if isinstance(exception, HostUnreachable):
        _host_away(exception, sender, task_id, args)


def _host_away(exc: HostUnreachable, task, task_id: str | None, args) -> None:
    s = app.farm_settings
    if not s.notify_url:
        return
    host = exc.host or "unknown"
    name = getattr(task, "name", "?")
    seen_by = {"task": name, "task_id": task_id}
    if name in RUN_TASKS and args:
        seen_by["run_id"] = args[0]
    try:
        since = store().notices.outage(host, s.notify_host_quiet)
    except Exception:  # noqa: BLE001 - as emit
        log.exception("could not record that %s is away", host)
        return
    if since is not None:
        emit(notify.host_away(host, exc.message, since, seen_by))
