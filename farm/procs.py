"""Processes on this machine: who is alive, read from /proc, and dying with a parent.

A pid alone names a process only while it lives: the kernel hands it out again. A
process is therefore named by its pid, its start time (in clock ticks since boot) and
the machine and pid namespace it lives in (`place()`): two containers on one host share
no pids, and a record from before a reboot names nothing. Linux only, like darknet's
own process handling.
"""
from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL):
    """A `preexec_fn` that makes the child get `sig` when the thread that started it
    dies (PR_SET_PDEATHSIG; it survives exec). A parent that died between fork and
    prctl would go unnoticed, so the child checks it still has that parent."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0]); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return None


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot); None if there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, start: int | None = None) -> bool:
    """`pid` is running (not a zombie) and, when `start` is given, is still the process
    that started then (not a later one that got the same pid)."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def place() -> str:
    """This machine (boot id) and pid namespace: pids compare only within one place."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{ns}"


@dataclass(frozen=True)
class Pid:
    """One process, named so that a reused pid is not mistaken for it."""

    pid: int
    start: int
    place: str

    @classmethod
    def of(cls, pid: int) -> "Pid | None":
        start = start_ticks(pid)
        return None if start is None else cls(pid, start, place())

    @classmethod
    def this(cls) -> "Pid":
        return cls(os.getpid(), start_ticks(os.getpid()) or 0, place())

    @property
    def here(self) -> bool:
        """It lives (or lived) where this process can see it."""
        return bool(self.place) and self.place == place()

    def dead_here(self) -> bool:
        """Known for certain to be gone: seen from its own place and not alive."""
        return self.here and not alive(self.pid, self.start)

    def to_dict(self) -> dict:
        return {"pid": self.pid, "start": self.start, "place": self.place}

    @classmethod
    def from_dict(cls, d: dict) -> "Pid":
        return cls(int(d["pid"]), int(d["start"]), str(d["place"]))


def kill_group(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group led by `pid`; False when there is none."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
