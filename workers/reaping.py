"""Every worker is a reaper of its own machine.

beat's `farm.reap` runs on one machine, the one whose cpu worker takes it, and a dead
holder is seen at once only there (its pid is gone); a holder on another machine was
found only when its lease expired (FARM_LEASE_TTL, 30 s). The user's trainer is another
machine than the head. So each worker also runs the reaper in its main process every
`reaper_interval` seconds: a pool process killed on a GPU host is seen by its own
worker, and a worker killed there by the one `farm up` starts again in its place (or by
any other worker of that host), within seconds. Passes are cheap (the set of running
runs and their leases, one round trip) and safe to run anywhere at once: queuing a lost
run again is one atomic step that only the first reaper wins.
"""
from __future__ import annotations

import logging
import threading

from celery.signals import celeryd_after_setup, worker_shutdown

from farm.errors import FarmError

log = logging.getLogger(__name__)
_stop = threading.Event()


@celeryd_after_setup.connect
def _watch(sender=None, instance=None, **_) -> None:
    every = instance.app.farm_settings.reaper_interval

    def watch() -> None:
        from workers.tasks.train import reap_here
        away = False  # Redis away (restarting): said once, not every pass
        while not _stop.wait(every):
            try:
                reap_here()  # it says what it queued again, and why
                away = False
            except FarmError as e:
                if not away:
                    log.warning("the reaper's pass failed (%s); the next ones try again", e)
                away = True
            except Exception:  # noqa: BLE001 - the broker's errors are many
                log.exception("the reaper's pass failed; the next one tries again")
    threading.Thread(target=watch, daemon=True, name="reaper").start()


@worker_shutdown.connect
def _end(**_) -> None:
    _stop.set()
