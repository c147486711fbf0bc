"""Builds of recipe datasets: the controller asks for one (`request`), a worker makes it
(`build_recipe`). State in Redis: farm.store.recipes.RecipeStore.

Built once: the first controller to HSETNX the recipe's `claimed` field sends the build;
every other controller (a second tick, a restarted one, another sweep with the same
recipe) sees the claim and waits. The builder holds a lease while it works and writes
the end state (`ready` with the dataset, or `failed` with the reason) before letting go;
`ready` and `failed` are final, and a builder that finds either does nothing. So a
message sent twice builds nothing twice. Recovery, each by whichever controller looks
next: a claim never followed by a message (its controller died) is sent after
CLAIM_GRACE; a build whose lease expired before it ended (its worker died) is sent again,
up to MAX_ATTEMPTS, then fails its trials; a message not started after RESEND_AFTER (its
worker died with it unacknowledged) is sent again. Even two builds at once would make
the same content-addressed folder (farm.datasets.package renames atomically).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from farm.darknet.dialect import Dialect
from farm.datasets.recipe import RecipeState
from farm.errors import FarmError
from farm.datasets import recipe as recipes_mod
from farm.store import Store
from farm.store.recipes import RecipeStore

#: enqueue_build(recipe key) -> task id: how a build reaches an `augment` worker.
EnqueueBuild = Callable[[str], str]

BUILD_TTL = 30.0      # the builder's lease; renewed every third of it
CLAIM_GRACE = 10.0    # a claim with no message sent after this: its controller died
RESEND_AFTER = 300.0  # a message not started after this: assume it was lost
MAX_ATTEMPTS = 2      # builds whose worker died mid-way before the recipe fails
FINAL = tuple(s for s in RecipeState if s.final)


def request(recipes: RecipeStore, key: str, rec: dict[str, str], enqueue: EnqueueBuild,
            now: float) -> str | None:
    """See that the build of `key` is on its way. `rec` is RecipeStore.load(key).
    Returns what was done: "sent", "resent", "retried", "failed", or None."""
    state = rec.get("state", "")
    if state in FINAL:
        return None
    if not rec.get("claimed"):
        if not recipes.claim(key, now):
            return None  # another controller won the claim and sends it
        # before the message: a builder overwrites it
        recipes.update(key, state=RecipeState.QUEUED)
        _send(recipes, key, enqueue, now)
        return "sent"
    if rec.get("lease"):
        return None  # being built now
    if state == RecipeState.BUILDING:  # no lease: its worker died before the end
        if int(rec.get("attempts") or 0) >= MAX_ATTEMPTS:
            error = (f"the worker building it ({rec.get('worker') or '?'}) stopped before "
                     f"the end, {rec.get('attempts')} times; see that worker's log")
            done = recipes.set_state_if(key, RecipeState.BUILDING, state=RecipeState.FAILED,
                                        ended_at=now, error=error, step="")
            return "failed" if done else None
        if recipes.set_state_if(key, RecipeState.BUILDING, state=RecipeState.QUEUED, step=""):
            _send(recipes, key, enqueue, now)
            return "retried"
        return None
    sent = float(rec.get("enqueued_at") or 0)
    if (not sent and now - float(rec["claimed"]) > CLAIM_GRACE) or \
            (sent and now - sent > RESEND_AFTER):
        _send(recipes, key, enqueue, now)
        return "resent"
    return None


def _send(recipes: RecipeStore, key: str, enqueue: EnqueueBuild, now: float) -> None:
    task_id = enqueue(key)
    recipes.update(key, task_id=task_id, enqueued_at=now)


def status(rec: dict[str, str] | None, now: float) -> str:
    """What a trial waiting for this build shows: "queued for an augment worker", ..."""
    if not rec or not rec.get("claimed"):
        return "not requested yet"
    state = rec.get("state") or RecipeState.QUEUED
    if state == RecipeState.BUILDING:
        since = now - float(rec.get("started_at") or now)
        step = rec.get("step") or "building"
        return f"{step} on {rec.get('worker') or '?'} ({since:.0f} s)"
    if state == RecipeState.QUEUED:
        again = int(rec.get("attempts") or 0)
        return "queued for an augment worker" + (f" (attempt {again + 1})" if again else "")
    return state


def build_recipe(store: Store, data_dir: str | Path, key: str, *, worker: str,
                 host: str = "", dialect: Dialect = Dialect.PJREDDIE, ttl: float = BUILD_TTL,
                 now: Callable[[], float] = time.time) -> dict[str, str]:
    """Build the dataset of recipe `key` unless it is built, failed, or being built by
    another worker; returns the build record. A bad recipe or a dataset that fails its
    lint ends as `failed` with the message (never raised: the trials read it)."""
    recipes = store.recipes
    if recipes.load(key).get("state") in FINAL:
        return recipes.load(key)
    lease = recipes.lease(key, worker, ttl)
    if not lease.acquire():
        return recipes.load(key)  # another worker is building it
    try:
        if recipes.load(key).get("state") in FINAL:  # ended between the two reads
            return recipes.load(key)
        recipes.attempt(key)
        recipes.update(key, state=RecipeState.BUILDING, worker=worker, started_at=now(),
                       step="starting", error="")
        renew = lease.keep_alive(f"lease-{key}")
        try:
            result = recipes_mod.build(recipes.recipe(key), data_dir, dialect=dialect,
                                       on_step=lambda step: recipes.update(key, step=step))
        except FarmError as e:
            recipes.update(key, state=RecipeState.FAILED, ended_at=now(), step="",
                           error=str(e))
        except Exception as e:  # a bug or a full disk: the trials must not wait forever
            recipes.update(key, state=RecipeState.FAILED, ended_at=now(), step="",
                           error=f"{type(e).__name__}: {e}")
            raise
        else:
            recipes.update(key, state=RecipeState.READY, ended_at=now(), step="",
                           dataset_id=result.dataset_id, host=host,
                           data=str(Path(result.path) / "obj.data"),
                           images=result.images, train=result.train, valid=result.valid,
                           warnings=json.dumps(list(result.warnings)))
        finally:
            renew.stop()
    finally:
        lease.release()
    return recipes.load(key)
