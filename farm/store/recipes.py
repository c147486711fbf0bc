"""The builds of recipe datasets in Redis (farm.sweeps.builds). Datasets built from
recipes are the farm's, not one sweep's: two sweeps with the same recipe share one build.
Keys (prefix `farm:recipe:`):

    farm:recipe:<key>          hash: `recipe` (canonical JSON, written at submission),
                               `claimed` (HSETNX: the one controller that sends the build),
                               `task_id`, `enqueued_at`, `state` (queued | building |
                               ready | failed), `step`, `worker`, `attempts`, `started_at`,
                               `ended_at`, `dataset_id`, `data` (its obj.data), `error`
    farm:recipe:<key>:lease    the lease of the worker building it (farm.store.lease,
                               renewed): one build at a time; a builder that died lets it
                               expire
    farm:recipe:<key>:sweeps   set of sweeps waiting for it (ticked when the build ends)
"""
from __future__ import annotations

import json
from typing import Any

from farm.errors import NotFound
from farm.store.lease import Lease
from farm.store.redis import Connection
from farm.store.redis import key as farm_key


def recipe_key(*parts: str) -> str:
    return farm_key("recipe", *parts)


_rk = recipe_key


class RecipeStore:
    """The builds of recipe datasets (keys above). Writers touch their own fields of the
    hash: the controller `claimed`/`task_id`/`enqueued_at`, the builder the rest."""

    def __init__(self, db: Connection):
        self.db = db
        self.r = db.r

    def load(self, key: str) -> dict[str, str]:
        """The build record and, as `lease`, the builder holding it now ("" if none),
        read in one transaction (a builder writes its end state before letting go)."""
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            pipe.hgetall(_rk(key))
            pipe.get(_rk(key, "lease"))
            rec, lease = pipe.execute()
        return {**rec, "lease": lease or ""} if rec else {}

    def load_many(self, keys) -> dict[str, dict[str, str]]:
        keys = sorted(set(keys))
        if not keys:
            return {}
        with self.db.translated():
            pipe = self.r.pipeline(transaction=True)
            for key in keys:
                pipe.hgetall(_rk(key))
                pipe.get(_rk(key, "lease"))
            raw = pipe.execute()
        return {k: {**raw[2 * i], "lease": raw[2 * i + 1] or ""}
                for i, k in enumerate(keys) if raw[2 * i]}

    def recipe(self, key: str) -> dict[str, Any]:
        with self.db.translated():
            text = self.r.hget(_rk(key), "recipe")
        if text is None:
            raise NotFound(f"no dataset recipe {key!r}",
                           hint="recipes are recorded when a sweep that uses them is "
                                "submitted")
        return json.loads(text)

    def claim(self, key: str, now: float) -> bool:
        """True for the one caller that is to send the build (HSETNX: build once)."""
        with self.db.translated():
            return bool(self.r.hsetnx(_rk(key), "claimed", repr(now)))

    def update(self, key: str, **values: Any) -> None:
        with self.db.translated():
            self.r.hset(_rk(key), mapping={k: "" if v is None else str(v)
                                           for k, v in values.items()})

    def set_state_if(self, key: str, expected: str, **values: Any) -> bool:
        """Write `values` only while `state` is still `expected` (WATCH/MULTI): a stale
        reader never overwrites an end state a builder wrote meanwhile."""
        def body(pipe) -> bool:
            if (pipe.hget(_rk(key), "state") or "") != expected:
                return False
            pipe.multi()
            pipe.hset(_rk(key), mapping={k: str(v) for k, v in values.items()})
            pipe.execute()
            return True
        return self.db.watching([_rk(key)], body, False)

    def attempt(self, key: str) -> int:
        with self.db.translated():
            return int(self.r.hincrby(_rk(key), "attempts", 1))

    def waiting(self, key: str) -> list[str]:
        with self.db.translated():
            return sorted(self.r.smembers(_rk(key, "sweeps")))

    def lease(self, key: str, owner: str, ttl: float) -> Lease:
        """The builder's lease on the recipe (`acquire` it before building)."""
        return Lease(self.db, _rk(key, "lease"), ttl, owner=owner)

    # -- reclaiming built datasets (farm.gc) ----------------------------------------------
    def built(self) -> dict[str, dict[str, str]]:
        """The record of every recipe whose dataset is built (`ready`), by key."""
        with self.db.translated():
            keys = [k.split(":")[2] for k in self.r.scan_iter(match=_rk("*"), count=500)
                    if k.count(":") == 2]
        return {k: rec for k, rec in self.load_many(keys).items() if rec.get("state") == "ready"}

    def forget(self, key: str, dataset_id: str) -> dict[str, str] | None:
        """Make a built recipe unbuilt (its dataset is about to be removed), so a sweep
        that needs it later builds it again; only while it is still `ready` with
        `dataset_id` (WATCH/MULTI). Returns the fields it dropped, for `restore`."""
        def body(pipe) -> dict[str, str] | None:
            rec = pipe.hgetall(_rk(key))
            if rec.get("state") != "ready" or rec.get("dataset_id") != dataset_id:
                return None
            dropped = {k: v for k, v in rec.items() if k != "recipe"}
            pipe.multi()
            pipe.hdel(_rk(key), *dropped)
            pipe.execute()
            return dropped
        return self.db.watching([_rk(key)], body, None)

    def restore(self, key: str, fields: dict[str, str]) -> None:
        """Undo `forget` (a sweep started to use the dataset meanwhile)."""
        with self.db.translated():
            self.r.hset(_rk(key), mapping=fields)
