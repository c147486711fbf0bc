"""The child processes of `farm up`, supervised as systemd or supervisord would.

A child that dies is restarted after a backoff (`restart_backoff`, doubled for each
further death within `restart_window`); one that dies `restart_limit` times within the
window is in a crash loop and given up, with its log's last lines. Every child is started
with a parent-death signal, so a `farm up` killed with SIGKILL takes its children with
it, and is written down (pid and start time) in `<data_dir>/farm-up.pid` with the
supervisor itself: whatever a lost supervisor left behind is found there and stopped by
the next `farm up` or `farm down`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from farm import procs
from farm.errors import FarmUnavailable
from farm.procs import Pid
from farm.settings import Settings

#: Lines of a given-up child's log quoted in the message.
LOG_LINES_QUOTED = 5


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    #: how `farm down` stops it
    stop_signal: int = signal.SIGTERM
    #: what it gets when `farm up` dies without stopping it
    death_signal: int = signal.SIGKILL
    #: variables of its own (a secret for this child only, never on its command line)
    env: dict[str, str] = field(default_factory=dict)
    #: its umask; 0o077 for a child whose files hold the farm's data or the tasks' (Redis,
    #: Flower): no other local user reads them. -1: this process's
    umask: int = -1


@dataclass
class Child:
    spec: ChildSpec
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    deaths: deque = field(default_factory=deque)
    restart_at: float | None = None
    given_up: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


class Children:
    """Spawns, watches, restarts and stops the children; `events` collects what happened
    (for Redis and the board) and `echo` tells the person at the terminal."""

    def __init__(self, s: Settings, logs: Path, record: Path, *, cwd: str,
                 echo: Callable[..., None]):
        self.s = s
        self.logs = logs
        self.record = record
        self.cwd = cwd
        self.echo = echo
        self.children: list[Child] = []
        self.events: list[dict] = []

    # -- start ------------------------------------------------------------------------
    def spawn(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children.append(child)
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        log = open(self.logs / f"{child.name}.log", "ab")
        env = {**os.environ, **self.s.to_env(), **child.spec.env}
        try:
            child.popen = subprocess.Popen(
                child.spec.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                start_new_session=True, umask=child.spec.umask,
                preexec_fn=procs.die_with_parent(child.spec.death_signal))
        finally:
            log.close()
        child.started_at, child.restart_at = time.time(), None
        self.write_record()

    # -- watch --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Notice deaths, restart what is due; called every few tenths of a second."""
        now = time.time() if now is None else now
        for child in self.children:
            if child.given_up:
                continue
            if child.restart_at is None and child.popen is not None \
                    and child.popen.poll() is not None:
                code, pid = child.popen.returncode, child.popen.pid
                self._died(child, now, f"{child.name} (pid {pid}) {describe_exit(code)} after "
                                       f"{now - child.started_at:.0f} s", pid=pid, code=code)
            elif child.restart_at is not None and now >= child.restart_at:
                try:
                    self._start(child)
                except OSError as e:  # no fork, no binary: a death like any other
                    self._died(child, now, f"{child.name} could not be started: {e}")
                    continue
                self._event(child, "restarted", f"{child.name} restarted (pid {child.popen.pid})")

    def _died(self, child: Child, now: float, how: str, pid: int | None = None,
              code: int | None = None) -> None:
        child.deaths.append(now)
        while child.deaths and child.deaths[0] < now - self.s.restart_window:
            child.deaths.popleft()
        if len(child.deaths) >= self.s.restart_limit:
            child.given_up = True
            tail = self.log_tail(child.name)
            self._event(child, "gave_up",
                        f"{how}: {len(child.deaths)} deaths within {self.s.restart_window:g} s "
                        f"is a crash loop; not restarting it. Its log, "
                        f"{self.logs / (child.name + '.log')}, ends:\n{tail}\n"
                        f"Fix the cause, then `farm down` and `farm up` (restart_limit and "
                        f"restart_window set how many deaths are a loop)", pid=pid, code=code)
            return
        delay = self.s.restart_backoff * 2 ** (len(child.deaths) - 1)
        child.restart_at = now + delay
        self._event(child, "died", f"{how}; restarting it in {delay:g} s", pid=pid, code=code)

    def _event(self, child: Child, event: str, message: str, **extra) -> None:
        self.events.append({"at": round(time.time(), 3), "child": child.name, "event": event,
                            "pid": extra.get("pid", child.popen.pid if child.popen else None),
                            "code": extra.get("code"), "message": message})
        self.echo(f"farm up: {message}", err=True)

    def log_tail(self, name: str, lines: int = LOG_LINES_QUOTED) -> str:
        try:
            text = (self.logs / f"{name}.log").read_bytes()[-8192:].decode(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join("  | " + ln for ln in text.splitlines()[-lines:])

    def dead_before_ready(self) -> Child | None:
        """A child that died while the farm was starting (before supervision began)."""
        return next((c for c in self.children if c.popen is not None
                     and c.popen.poll() is not None), None)

    # -- stop ---------------------------------------------------------------------------
    def stop(self, grace: float = 15.0) -> None:
        """Stop children in reverse order of start, each with its own signal, then SIGKILL
        for any that outlast `grace`."""
        for child in reversed(self.children):
            child.restart_at, child.given_up = None, True
            if child.popen is None or child.popen.poll() is not None:
                continue
            procs.kill_group(child.popen.pid, child.spec.stop_signal)
            try:
                child.popen.wait(grace)
            except subprocess.TimeoutExpired:
                procs.kill_group(child.popen.pid, signal.SIGKILL)
                child.popen.wait()
        self.children.clear()
        self.record.unlink(missing_ok=True)

    # -- the record of what is running --------------------------------------------------
    def write_record(self) -> None:
        """This supervisor and its running children, replaced atomically."""
        children = {}
        for c in self.children:
            p = Pid.of(c.popen.pid) if c.popen is not None else None
            if p is not None:
                children[c.name] = {**p.to_dict(), "stop_signal": int(c.spec.stop_signal)}
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": Pid.this().to_dict(), "children": children}))
        os.replace(tmp, self.record)


# -- what a killed supervisor left -------------------------------------------------------

def read_record(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
        Pid.from_dict(doc["supervisor"])
        return doc
    except (OSError, ValueError, KeyError, TypeError):
        return None


def supervisor_alive(doc: dict) -> int | None:
    """The pid of the `farm up` the record names, if it still runs."""
    p = Pid.from_dict(doc["supervisor"])
    return p.pid if p.here and procs.alive(p.pid, p.start) else None


def stop_leftovers(doc: dict, grace: float = 10.0) -> list[str]:
    """Stop every child of a dead supervisor that still runs (its whole process group);
    returns "name (pid N)" of each one stopped."""
    left = []
    for name, d in doc.get("children", {}).items():
        p = Pid.from_dict(d)
        if p.here and procs.alive(p.pid, p.start):
            procs.kill_group(p.pid, int(d.get("stop_signal", signal.SIGTERM)))
            left.append((name, p))
    deadline = time.monotonic() + grace
    for name, p in left:
        while procs.alive(p.pid, p.start) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs.alive(p.pid, p.start):
            procs.kill_group(p.pid, signal.SIGKILL)
    return [f"{name} (pid {p.pid})" for name, p in left]


def claim(path: Path, echo: Callable[..., None], grace: float = 10.0) -> None:
    """Make sure no farm is up with this data dir; stop what a killed one left behind
    (SIGKILL for what outlasts `grace` seconds)."""
    doc = read_record(path)
    if doc is None:
        return
    pid = supervisor_alive(doc)
    if pid is not None:
        raise FarmUnavailable(f"a farm is already up here (pid {pid}, data dir {path.parent})",
                              hint="`farm down` stops it")
    stopped = stop_leftovers(doc, grace)
    if stopped:
        echo(f"farm up: stopped what a farm killed earlier left running: {', '.join(stopped)}",
             err=True)
    path.unlink(missing_ok=True)
