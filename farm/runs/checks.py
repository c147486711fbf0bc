"""Checks before queueing: what `farm train` and `farm sweep submit` refuse at once.

A run that can only end as bad input must not get a run id: the user would learn it
from `farm status` an hour later. So before anything is written to Redis the cfg (with
its `--set` values) is checked against darknet's rules, its memory need against the
host that will train it, the start weights against the cfg, and the dataset by the lint.
The worker runs the same checks again before its first attempt (workspace.preflight:
files change between submit and training), with its own darknet's dialect and memory.

Every check judges files in the dialect they belong to, not merely the darknet
installed where the command runs (`trainer_dialect`); the start weights by their own
header and the cfg's features (farm.darknet.weights.weights_dialects).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from farm.darknet import dialect as dialects
from farm.darknet.dialect import Dialect
from farm.darknet.cfg import Cfg, cfg_dialect, check_cfg
from farm.darknet.memory import MemoryEstimate, estimate, size_text
from farm.darknet.weights import check_weights
from farm.datasets.lint import lint_obj_data
from farm.errors import FarmError, Finding, FindingsError, Severity
from farm.inventory import Inventory, default_inventory_path, load_inventory
from farm.settings import Settings


@dataclass(frozen=True)
class MemoryLimit:
    """The memory one training process may use where it trains."""

    bytes: int
    where: str  # "this host's RAM", "lily2's GPUs (24 GB each)", …
    gpu: bool = False


@dataclass
class Checked:
    """What the checks found: warnings (errors were raised), and what they judged with."""

    dialect: Dialect
    warnings: list[Finding] = field(default_factory=list)
    memory: MemoryEstimate | None = None


def check_training(*, data: str | None, cfg: Cfg, weights: str | None, dialect: Dialect,
                   base_dir: str | None, limit: MemoryLimit | None,
                   reader: Dialect | None = None,
                   place: Callable[[Finding], Finding] = lambda f: f) -> Checked:
    """Check a run's inputs; FindingsError with every finding when one is an error.

    `data` or `weights` None: not checked here (on another host: its worker checks them).
    `reader`: the darknet that will load the weights, when known (the worker's).
    `place`: where a finding on the cfg is shown (see `with_overrides`).
    """
    found = [place(f) for f in check_cfg(cfg, training=True, dialect=dialect)]
    checked = Checked(dialect)
    if not _errors(found):
        checked.memory = estimate(cfg, dialect=dialect)
        found += [place(f) for f in memory_findings(cfg, checked.memory, limit)]
    if weights is not None:
        found += check_weights(weights, cfg, for_inference=False, reader=reader)
    if data is not None:
        found += lint_obj_data(data, classes=cfg.classes, dialect=dialect,
                               base_dir=base_dir).findings
    if _errors(found):
        raise FindingsError(found, "run")
    checked.warnings = found
    return checked


def memory_findings(cfg: Cfg, need: MemoryEstimate | None,
                    limit: MemoryLimit | None) -> list[Finding]:
    """A finding when training `cfg` needs more memory than `limit` holds."""
    if need is None or limit is None:
        return []
    total = need.gpu if limit.gpu else need.host
    if total <= limit.bytes:
        return []
    net = cfg.net
    line = net.line_of("width") if net is not None else None
    return [Finding(cfg.path, line, f"training needs {need.describe(limit.gpu)}; "
                    f"{limit.where} {'have' if limit.where.endswith('s') else 'has'} "
                    f"{size_text(limit.bytes)}: darknet would fail or swap after "
                    "allocating it", "lower width/height (multiples of 32), or raise "
                    "subdivisions so fewer images go through at a time (batch/subdivisions)")]


def _errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def with_overrides(cfg: Cfg, sets: dict[str, str], origin: str = "--set"
                   ) -> tuple[Cfg, Callable[[Finding], Finding]]:
    """`cfg` with the `--set` values, and how to place a finding on it for a person: at
    the line of the user's file, or at the `--set` (`origin`) that made the line."""
    out = cfg.copy()
    had = {opt.key for opt in out.net.options} if out.net is not None else set()
    for key, value in sets.items():
        out.set_net(key, value)
    if not sets:
        return out, lambda f: f
    made = {out.net.option(k).line: f"{origin} {k}={v}" for k, v in sets.items()}
    added = sorted(out.net.option(k).line for k in sets if k not in had)

    def place(f: Finding) -> Finding:
        if f.path != out.path or f.line is None:
            return f
        if f.line in made:
            return replace(f, path=made[f.line], line=None)
        return replace(f, line=f.line - sum(1 for line in added if line < f.line))
    return out, place


# ---------------------------------------------------------------------------------------
# Where the run will train


def trainer_dialect(settings: Settings, cfg: Cfg, host: str | None = None,
                    inventory: Inventory | None = None) -> Dialect:
    """The dialect a run of `cfg` is judged with at submit, most certain first: the
    farm's configured dialect (FARM_DARKNET_DIALECT), the inventory's for the hosts that
    may train it, the darknet installed here when the farm is the embedded one (its
    Redis listens on loopback: every worker is on this machine), the cfg's own features
    (AlexeyAB's [route] groups=, mish, …), the darknet installed here, and AlexeyAB's
    (the widest) on a host that has none."""
    if settings.darknet_dialect != "auto":
        return Dialect.of(settings.darknet_dialect)
    declared = {h.dialect for h in _trainers(inventory, host)}
    if len(declared) == 1 and None not in declared:
        return declared.pop()
    own = None if settings.embedded else cfg_dialect(cfg)
    if own is not None:
        return own
    try:
        return dialects.detect(settings.darknet, settings.darknet_dialect)
    except FarmError:
        return Dialect.ALEXEYAB


def submit_limit(settings: Settings, host: str | None = None,
                 inventory: Inventory | None = None) -> MemoryLimit | None:
    """The memory a run may use where it will train, as known at submit: the pinned
    host's GPUs, or the largest of the inventory's GPU hosts (it fits one of them), from
    `gpu_memory:`; this host's RAM when the run trains here (no GPU host in the
    inventory: the embedded farm). None when unknown: the worker checks."""
    trainers = _trainers(inventory, host)
    if trainers:
        if any(h.gpu_memory is None for h in trainers):
            return None
        best = max(trainers, key=lambda h: h.gpu_memory)
        return MemoryLimit(best.gpu_memory, f"{best.name}'s GPUs" if host else
                           f"the largest GPUs of the inventory ({best.name}'s)", gpu=True)
    if host is None or host == settings.host_name:
        return local_limit(settings)
    return None


def worker_limit(settings: Settings) -> MemoryLimit | None:
    """The memory darknet may use on this worker: its GPU's (the inventory's
    gpu_memory) when it is pinned to one, else this host's RAM."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        try:
            inventory = read_inventory(settings)
        except FarmError:  # the inventory's own problem, not this run's: not checked
            return None
        me = (inventory.hosts if inventory else {}).get(settings.host_name)
        if me is None or me.gpu_memory is None:
            return None
        return MemoryLimit(me.gpu_memory, f"{me.name}'s GPU", gpu=True)
    return local_limit(settings)


def local_limit(settings: Settings) -> MemoryLimit:
    return MemoryLimit(host_memory(), f"{settings.host_name}'s RAM")


def host_memory() -> int:
    """This machine's physical memory, or its cgroup's limit when lower (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def read_inventory(settings: Settings) -> Inventory | None:
    """The inventory when there is one (keys are not needed to read it); None without."""
    path = Path(settings.inventory or default_inventory_path())
    if not path.is_file():
        return None
    return load_inventory(path, check_files=False)


def _trainers(inventory: Inventory | None, host: str | None) -> list:
    """The inventory hosts a run may train on: the pinned one, else every GPU host."""
    if inventory is None:
        return []
    if host is not None:
        h = inventory.hosts.get(host)
        return [h] if h is not None and "gpu" in h.roles else []
    return inventory.with_role("gpu")
