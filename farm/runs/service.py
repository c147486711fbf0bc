"""Submitting runs and executing them: the training workflow without Celery.

`execute_run` is what a GPU worker does with a run: take its lease (so no two darknet
processes ever train one run), keep the lease alive while darknet runs, start attempts
until one completes or the policy gives up, and record every step in Redis.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from farm.darknet import dialect as dialects
from farm.darknet.cfg import Cfg, validate_net_overrides
from farm.darknet.events import Iteration
from farm.darknet.process import DarknetProcess
from farm.darknet.weights import cut_short
from farm.errors import BadInput, FarmError, Finding, HostUnreachable, NoSpace
from farm.queues import pinned_host
from farm.runs import checks, disk, workspace
from farm.runs.life import lose, move
from farm.runs.model import Attempt, Checkpoint, Outcome, Run, RunState, new_run_id
from farm.runs.policy import GiveUp, Policy, Restart, next_attempt, resume_point
from farm.runs.reaper import stop_leftover_darknet
from farm.runs.retention import Retention, backup_waste, checkpoint_waste, remove
from farm.runs.schedule import fit_steps
from farm.runs.supervisor import Limits, Supervisor
from farm.settings import EVAL_EVERY, Settings
from farm.store import Store
from farm.store.lease import LeaseRenewer


def _must_exist(path: str, what: str) -> str:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise BadInput(f"{what} {path} does not exist", path=full,
                       hint=f"check the path of the {what}")
    return full


#: why a holder stops for good: frozen or cut off past its lease, the run was taken over
#: (its new holder carries it on, and only its record is the truth from then on)
LEASE_GONE = "the lease went to another worker while this one trained"


def _elsewhere(settings: Settings, path: str) -> bool:
    """`path` is HOST:/path on another inventory host."""
    if ":" not in path or path.startswith("/"):
        return False
    from farm.remote.flow import remote_location
    host, _ = remote_location(settings, path)
    return host is not None and host != settings.host_name


def submit_run(store: Store, settings: Settings, *, data: str, cfg: str,
               weights: str | None = None, overrides: dict[str, str] | None = None,
               policy: dict[str, str] | None = None, base_dir: str | None = None,
               sweep: str | None = None, trial: int | None = None, eval_every: int = EVAL_EVERY,
               task_id: str | None = None, origin: str | None = None,
               queue: str | None = None, cfg_text: str | None = None,
               check: bool = True, warn: Callable[[Finding], None] | None = None,
               eval_screens: str | None = None, rank_by: str = "map50") -> Run:
    """Check what can be checked on the submitting host and record the run as queued.

    `origin` names the host whose files `data` and `weights` are: a worker on another
    host fetches them first. Checked here when that is this host; else the caller checks
    they exist there. `cfg_text`: the cfg as read where the work was submitted (a sweep),
    instead of reading `cfg` here. `check`: run the checks before queueing
    (farm.runs.checks: cfg, memory, start weights, dataset lint; a sweep checked them
    when it was submitted); their warnings go to `warn`. `eval_screens`: a screens set
    every evaluation also scores (its obj.data; checked here unless a sweep's spec did,
    or unless it is `HOST:/path` on another host: the caller checks it there, the host
    that evaluates fetches it), `rank_by` "screens_map50" ranks on it."""
    remote = origin is not None and origin != settings.host_name
    if eval_screens is None and rank_by != "map50":
        raise BadInput(f"rank_by={rank_by} needs a screens set to evaluate on",
                       hint="give --eval-screens DATA (a `--kind screens` package)")
    if eval_screens is not None and sweep is None and not _elsewhere(settings, eval_screens):
        from farm.datasets.screens import open_screens  # a sweep's spec checked its own
        eval_screens = open_screens(eval_screens).obj_data
    data_path = data if remote else _must_exist(data, "obj.data")
    cfg_path = os.path.abspath(cfg) if cfg_text is not None else _must_exist(cfg, "cfg")
    weights_path = (weights if remote else _must_exist(weights, "start weights file")
                    ) if weights else None
    sets = validate_net_overrides(dict(overrides or {}))
    pol = Policy.from_settings(settings, policy)
    base_cfg = Cfg.parse(cfg_text, cfg_path) if cfg_text is not None else Cfg.load(cfg_path)
    steps = fit_steps(base_cfg.max_batches, base_cfg.steps, base_cfg.net_get("policy"), sets)
    if steps is not None:  # --set max_batches=N moves the steps along, as a budget does
        sets["steps"] = steps
    parsed, place = checks.with_overrides(base_cfg, sets)
    if parsed.max_batches is None:
        raise BadInput("the cfg has no max_batches in [net]", path=cfg_path,
                       hint="add max_batches=N to [net] or pass --set max_batches=N")
    base = os.path.dirname(data_path) if remote else os.path.abspath(base_dir or os.getcwd())
    host = pinned_host(queue)
    inventory = checks.read_inventory(settings)
    dialect = checks.trainer_dialect(settings, parsed, host, inventory)
    cadence = dialects.checkpoint_cadence(dialect, eval_every)  # what darknet can write
    if check:
        found = checks.check_training(
            data=None if remote else data_path, cfg=parsed,
            weights=None if remote else weights_path, base_dir=base, place=place,
            dialect=dialect, limit=checks.submit_limit(settings, host, inventory))
        for finding in found.warnings if warn else ():
            warn(finding)
    run = Run(id=new_run_id(), data=data_path, cfg=cfg_path, weights=weights_path,
              base_dir=base, overrides=sets,
              policy=pol.to_dict(), host=settings.host_name, created_at=time.time(),
              max_batches=int(parsed.max_batches), sweep=sweep, trial=trial,
              eval_every=cadence.every,
              task_id=task_id, origin=origin, queue=queue,
              cfg_text=base_cfg.dumps(), warnings=[cadence.note] if cadence.note else [],
              eval_screens=eval_screens, rank_by=rank_by)
    store.ping()
    store.runs.save(run)
    return run


@dataclass
class Hooks:
    """What the caller (the Celery task) wants to hear about while a run trains."""

    progress: Callable[[Run, Iteration], None] = lambda run, it: None
    attempt_started: Callable[[Run, Attempt], None] = lambda run, attempt: None
    #: a checkpoint was recorded (finite or not); evaluation is scheduled from here
    checkpoint: Callable[[Run, Checkpoint], None] = lambda run, checkpoint: None
    #: make the run's files local (a run whose data is on another host); it changes the
    #: run's paths in place and raises HostUnreachable while that host is away
    fetch: Callable[[Run], None] = lambda run: None


def execute_run(store: Store, settings: Settings, run_id: str, *, worker: str,
                hooks: Hooks | None = None) -> Run:
    """Train `run_id` to its end on this host. Returns the run as it ended (or as it is,
    when another process holds it); LeaseLost when it was taken over while training."""
    hooks = hooks or Hooks()
    lease = store.runs.lease(run_id, worker, settings.lease_ttl)
    held = lease.acquire()
    run = store.runs.load(run_id)
    if not held:
        return run  # held elsewhere: never start a second darknet for one run
    stop_leftover_darknet(run)  # taken over from a holder that died or lost its lease
    beat = lease.keep_alive(f"lease-{run_id}")
    try:
        run = _train(store, settings, run, worker, beat, hooks)
        if run.state.finished and settings.retention:
            _tidy(settings, run)
        return run
    finally:
        beat.stopped.set()
        lease.release()


def _train(store: Store, settings: Settings, run: Run, worker: str, beat: LeaseRenewer,
           hooks: Hooks) -> Run:
    if run.state.finished:
        return run
    if store.runs.cancel_requested(run.id):
        return _finish(store, run, RunState.CANCELLED, "cancelled before it started")
    policy = Policy.from_dict(run.policy)
    restart = _recover(run, policy)
    if isinstance(restart, GiveUp):
        return _end_from_last(store, run, restart)
    try:
        hooks.fetch(run)
    except HostUnreachable as e:
        run.message = f"waiting for a host: {e}"
        store.runs.save(run)
        raise  # the task tries again later; the run stays queued meanwhile
    except FarmError as e:
        _record_refusal(run, settings, e)
        return _finish(store, run, RunState.FAILED, _failure_message(run, run.attempts[-1]))
    # a queued run's message (resubmitted, waiting for a host or space) is over now
    store.runs.save(move(run, RunState.RUNNING, "", worker=worker))
    try:
        dialect = dialects.detect(settings.darknet, settings.darknet_dialect)
        binary = dialects.resolve_binary(settings.darknet)
        if not run.inputs_checked:
            workspace.preflight(run, dialect, checks.worker_limit(settings))
            workspace.write_inputs(run, settings.runs_dir)
            run.weights_iteration = _weights_iteration(run)
            run.inputs_checked = True
    except BadInput as e:
        _record_refusal(run, settings, e)
        return _finish(store, run, RunState.FAILED, _failure_message(run, run.attempts[-1]))
    while True:
        _wait_for_space(store, settings, run, dialect, restart)
        attempt, process = _start_attempt(store, settings, run, dialect, binary, restart)
        store.progress.record(run.id, attempt.number, [], log_markers(attempt), time.time())
        hooks.attempt_started(run, attempt)
        if process is not None:
            _supervise(store, settings, run, attempt, process, beat, hooks, dialect)
        if settings.retention:  # what the farm needed was moved out as it was written
            remove(backup_waste(attempt.workdir))
        # however darknet ended (a new holder may have killed it), a holder whose lease
        # was taken writes nothing more and starts no other attempt: LeaseLost
        store.runs.save_held(run, beat.lease, LEASE_GONE)
        outcome = attempt.outcome
        if outcome is Outcome.COMPLETED:
            return _finish(store, run, RunState.COMPLETED, attempt.message)
        if outcome is Outcome.CANCELLED:
            return _finish(store, run, RunState.CANCELLED, "cancelled by request")
        restart = next_attempt(run, attempt, policy)
        if isinstance(restart, GiveUp):
            return _finish(store, run, RunState.FAILED, _failure_message(run, attempt, restart))


def _weights_iteration(run: Run) -> int:
    """The iteration darknet resumes at from the start weights: `seen` / cfg batch
    (darknet.md §4); 0 for a file whose header cannot be read (the checks say why)."""
    if not run.weights:
        return 0
    from farm.darknet.weights import iteration_of
    try:
        return iteration_of(run.weights, int(workspace.base_hyper(run)["batch"]))
    except (FarmError, OSError, ValueError):
        return 0


def _tidy(settings: Settings, run: Run) -> None:
    """A finished run's retention: darknet's files in every attempt's backup/ (those of
    a holder that died too), checkpoints beyond the kept ones (farm.runs.retention)."""
    folder = workspace.run_dir(settings.runs_dir, run.id)
    for workdir in folder.glob("attempt-*"):
        remove(backup_waste(workdir))
    remove(checkpoint_waste(run, folder / "checkpoints", settings.keep_checkpoints))


def _wait_for_space(store: Store, settings: Settings, run: Run, dialect: dialects.Dialect,
                    restart: Restart) -> None:
    """Before an attempt: NoSpace, with the run queued again and its message saying what
    it waits for, when the disk has no room for the weights it will write (farm.runs.disk).
    The task tries again after disk_retry_delay, as for a host that is away."""
    need = _need(settings, run, dialect, restart.hyper or workspace.base_hyper(run))
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    short = disk.shortage(settings.runs_dir, need.to_start, need.explain(2 * disk.FILES_AHEAD))
    if short is None:
        return
    store.runs.save(move(run, RunState.QUEUED, worker=None, message=(
        f"waiting for disk space: {short}; looking again every "
        f"{settings.disk_retry_delay:g} s (`farm gc` reclaims space)")))
    raise NoSpace(run.message, hint="free space on that filesystem (`farm gc` removes what "
                                    "finished runs no longer need); the run resumes by itself")


def _need(settings: Settings, run: Run, dialect: dialects.Dialect,
          hyper: dict[str, str]) -> disk.Need:
    known = [run.weights or ""] + [c.path for c in run.checkpoints[-1:]]
    return disk.need_for(workspace.training_cfg(run, hyper), dialect,
                         settings.disk_margin, known)


def _recover(run: Run, policy: Policy) -> Restart | GiveUp:
    """Pick up a run whose previous holder vanished: its open attempt was lost."""
    last = run.current
    if last is None:
        return Restart(run.weights, {}, "first attempt")
    lose(run, f"worker {run.worker} stopped renewing the lease")  # unless the reaper said
    return next_attempt(run, last, policy)


def _end_from_last(store: Store, run: Run, why: GiveUp) -> Run:
    last = run.attempts[-1]
    if last.outcome is Outcome.COMPLETED:
        return _finish(store, run, RunState.COMPLETED, last.message)
    return _finish(store, run, RunState.FAILED, _failure_message(run, last, why))


def _start_attempt(store: Store, settings: Settings, run: Run, dialect: dialects.Dialect,
                   binary: str, restart: Restart) -> tuple[Attempt, DarknetProcess | None]:
    number = len(run.attempts) + 1
    requested = workspace.base_hyper(run)
    hyper = dict(restart.hyper) if restart.hyper is not None else dict(requested)
    cadence = dialects.checkpoint_cadence(dialect, run.eval_every)
    workdir, data, cfg = workspace.prepare_attempt(run, settings.runs_dir, number, hyper,
                                                   cadence.data)
    weights = restart.weights
    argv = dialects.train_argv(dialect, binary, str(data), str(workdir / workspace.CFG_NAME),
                               weights, extra=cadence.argv)
    start_it = resume_point(run)[1] if weights == resume_point(run)[0] else 0
    attempt = Attempt(number=number, command=argv, hyper=hyper, start_weights=weights,
                      start_iteration=start_it, host=settings.host_name, workdir=str(workdir),
                      log_path=str(workdir / "darknet.log"), started_at=time.time(),
                      changes=restart.changes, reason=restart.reason, requested=requested,
                      rate=restart.rate if restart.rate is not None
                      else float(hyper.get("learning_rate", "0.001")))
    run.attempts.append(attempt)
    process = None
    try:
        process = DarknetProcess(argv, workdir, stdin_data=dialects.train_stdin(dialect),
                                 memory_limit=settings.darknet_memory_limit << 20)
        attempt.pid = process.pid
    except FarmError as e:
        attempt.outcome, attempt.message, attempt.ended_at = Outcome.CRASHED, str(e), time.time()
    store.runs.save(run)
    return attempt, process


def log_markers(attempt: Attempt) -> list[str]:
    """The lines the run's log (in Redis: `farm logs`, the board) gets where an attempt
    starts: which one, from where and why, so attempts never run together. darknet.log on
    disk stays darknet's own output (one per attempt)."""
    where = f" from iteration {attempt.start_iteration}" if attempt.start_iteration else ""
    lines = [f"--- attempt {attempt.number}{where} on {attempt.host} ({attempt.reason}) ---"]
    if attempt.pid is None and attempt.outcome is not None:
        lines.append(f"--- darknet did not start: {attempt.message} ---")
    return lines


def _supervise(store: Store, settings: Settings, run: Run, attempt: Attempt,
               process: DarknetProcess, beat: LeaseRenewer, hooks: Hooks,
               dialect: dialects.Dialect) -> None:
    cfg = Cfg.load(Path(attempt.workdir) / workspace.CFG_NAME)
    backup = Path(attempt.workdir) / "backup"
    need = _need(settings, run, dialect, attempt.hyper)

    def space() -> str | None:
        short = disk.shortage(backup, need.to_train, need.explain(disk.FILES_AHEAD))
        return None if short is None else str(short)

    def interrupt() -> Outcome | None:
        if beat.lost.is_set():
            return Outcome.LOST
        if store.runs.cancel_requested(run.id):
            return Outcome.CANCELLED
        return None

    sup = Supervisor(progress=store.progress, run=run, attempt=attempt, process=process,
                     limits=Limits(max_batches=run.max_batches, burn_in=int(cfg.burn_in or 0),
                                   policy=Policy.from_dict(run.policy)),
                     checkpoints_dir=workspace.checkpoints_dir(settings.runs_dir, run.id),
                     interrupt=_throttled(interrupt, 0.5), on_progress=hooks.progress,
                     on_checkpoint=lambda r, c: (store.runs.save_held(r, beat.lease, LEASE_GONE),
                                                 hooks.checkpoint(r, c)),
                     retention=Retention.from_settings(settings),
                     weights_problem=lambda path: cut_short(path, cfg, dialect),
                     space=space,
                     space_every=settings.disk_check_interval)
    sup.supervise()


def _throttled(fn: Callable[[], Outcome | None], every: float) -> Callable[[], Outcome | None]:
    """Ask Redis about cancellation at most every `every` seconds, not per output chunk."""
    state = {"at": 0.0}

    def call() -> Outcome | None:
        now = time.monotonic()
        if now - state["at"] < every:
            return None
        state["at"] = now
        return fn()
    return call


def _record_refusal(run: Run, settings: Settings, e: FarmError) -> None:
    run.attempts.append(Attempt(
        number=len(run.attempts) + 1, command=[], hyper={}, start_weights=run.weights,
        start_iteration=0, host=settings.host_name, workdir="", log_path="",
        started_at=time.time(), reason="pre-flight check", ended_at=time.time(),
        outcome=Outcome.BAD_INPUT, message=workspace.findings_message(e)))


def _failure_message(run: Run, last: Attempt, why: GiveUp | None = None) -> str:
    if last.outcome is Outcome.BAD_INPUT:
        return f"bad input, not retried: {last.message}"
    return (f"gave up after {len(run.attempts)} attempt(s): "
            f"{why.reason if why else f'the last one {last.outcome.value}: {last.message}'}")


def _finish(store: Store, run: Run, state: RunState, message: str) -> Run:
    store.runs.save(move(run, state, message))
    return run
