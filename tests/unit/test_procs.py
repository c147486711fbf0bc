"""farm.procs on real processes: a reused pid is not mistaken for the process that had it,
and a child started with die_with_parent dies when its parent is killed with -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from farm import procs
from farm.procs import Pid


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_a_process_is_named_by_pid_start_and_place():
    p = subprocess.Popen(["sleep", "30"])
    try:
        me = Pid.of(p.pid)
        assert me is not None and me.here and procs.alive(p.pid, me.start)
        assert not me.dead_here()
        assert not procs.alive(p.pid, me.start + 1)  # same pid, another start: not it
        assert Pid.from_dict(me.to_dict()) == me
        elsewhere = Pid(p.pid, me.start, "another-boot/pid:[1]")
        assert not elsewhere.here and not elsewhere.dead_here()  # unknowable from here
    finally:
        p.kill()
        p.wait()
    assert me.dead_here()
    assert Pid.of(p.pid) is None


def test_a_zombie_is_not_alive():
    p = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while procs.alive(p.pid) and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.01)
    assert not procs.alive(p.pid)
    p.wait()


def test_a_child_started_with_die_with_parent_dies_with_it(tmp_path):
    """A parent killed with SIGKILL has no time to stop anything: the kernel does it."""
    pidfile = tmp_path / "grandchild"
    code = ("import subprocess, sys, time\n"
            "from farm.procs import die_with_parent\n"
            "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code],
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the child did not start its grandchild"
            time.sleep(0.02)
        grandchild = int(pidfile.read_text())
        assert procs.alive(grandchild)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(grandchild), "the grandchild outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
