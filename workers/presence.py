"""Workers say they are up, so that asking them ends as soon as they have all answered.

A Celery broadcast (`inspect().active_queues()`) cannot know how many replies to wait
for, so it always waits out its whole timeout: a second on every `farm sweep submit`,
`farm train --host` and board metrics pass, even when no worker is up at all. Each
worker therefore keeps a key in Redis (farm.store.workers) while it runs; the broadcast
is then told how many replies to expect. One killed outright still has its key for a
few seconds: the broadcast then waits its timeout, and the answer is the same as without
the keys. No key at all means no worker to ask.
"""
from __future__ import annotations

import logging
import threading

from celery.signals import celeryd_after_setup, worker_shutdown

from farm.errors import FarmError

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: list[threading.Thread] = []  # the announcing thread, once started


@celeryd_after_setup.connect
def _announce(sender=None, instance=None, **_) -> None:
    """Start saying, every `worker_announce` seconds, that this worker is up: from before
    it can answer a broadcast (its queues are chosen, its consumer not yet started), so a
    worker that answers is never missing from the count."""
    from workers.tasks import store
    name = sender
    queues = list(instance.app.amqp.queues.consume_from)
    every = instance.app.farm_settings.worker_announce
    presence = store().workers

    def say() -> None:
        try:
            presence.announce(name, queues, 3 * every)
        except FarmError:  # Redis away for a moment: the next turn says it again
            log.warning("could not announce worker %s (is Redis restarting?)", name)

    def keep() -> None:
        while not _stop.wait(every):
            say()
    say()  # now, before the worker can answer anyone
    _thread.append(threading.Thread(target=keep, daemon=True, name="announce"))
    _thread[0].start()


@worker_shutdown.connect
def _leave(sender=None, **_) -> None:
    _stop.set()
    for thread in _thread:
        thread.join(5)  # a turn under way would write the key again
    from workers.tasks import store
    try:
        store().workers.leave(sender.hostname)
    except FarmError:
        pass  # its key expires by itself


def active_queues(app, store, timeout: float) -> dict[str, list[dict]]:
    """What `app.control.inspect().active_queues()` answers (node -> its queues), asked
    only of the workers that said they are up and ended once they all answered."""
    try:
        expected = len(store.workers.present())
    except FarmError:
        expected = None  # Redis trouble: ask without a count, the broadcast will tell
    if expected == 0:
        return {}
    return app.control.inspect(timeout=timeout, limit=expected).active_queues() or {}
