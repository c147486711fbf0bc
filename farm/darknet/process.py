"""One darknet process: started so it can be watched, stopped, and never orphaned.

darknet is launched line-buffered (`stdbuf -oL -eL`: pjreddie's build otherwise sends
4 KiB blocks through a pipe), in a session of its own (so the whole process group can be
killed), with PR_SET_PDEATHSIG so it dies with the process that started it (a worker
killed with -9 must not leave darknet training on the GPU), in its own working directory
(darknet writes bad.list, chart.png and anchors.txt into its cwd).
"""
from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from farm.errors import DarknetNotFound
from farm.procs import die_with_parent


def _child_setup(memory_limit: int):
    """preexec_fn: die with the parent; cap private writable memory (RLIMIT_DATA) so that
    darknet's allocations fail, and it says so, before the kernel's OOM killer acts."""
    die = die_with_parent()

    def setup() -> None:
        die()
        if memory_limit > 0:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    return setup


class DarknetProcess:
    """A started darknet: read its merged stdout/stderr in chunks, stop its group."""

    def __init__(self, argv: list[str], cwd: Path, *, stdin_data: bytes | None = None,
                 env: dict[str, str] | None = None, memory_limit: int = 0):
        stdbuf = shutil.which("stdbuf")
        self.argv = argv
        full = ([stdbuf, "-oL", "-eL"] if stdbuf else []) + argv
        try:
            self._popen = subprocess.Popen(
                full, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_child_setup(memory_limit), bufsize=0, env=env)
        except OSError as e:
            raise DarknetNotFound(f"could not start {argv[0]}: {e.strerror}",
                                  hint="check FARM_DARKNET and the binary's permissions") from None
        if stdin_data:
            # Written from a thread: a darknet that never reads must not block us.
            threading.Thread(target=self._feed, args=(stdin_data,), daemon=True).start()
        self._fd = self._popen.stdout.fileno()
        self._eof = False

    def _feed(self, data: bytes) -> None:
        try:
            self._popen.stdin.write(data)
            self._popen.stdin.close()
        except OSError:
            pass

    @property
    def pid(self) -> int:
        return self._popen.pid

    def read(self, timeout: float) -> bytes | None:
        """Output available within `timeout` (b"" if none yet); None once output ended."""
        if self._eof:
            return None
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return b""
        data = os.read(self._fd, 65536)
        if not data:
            self._eof = True
            return None
        return data

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (darknet and anything it started)."""
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; negative for a signal (as subprocess reports it)."""
        rc = self._popen.wait(timeout)
        self._popen.stdout.close()
        return rc

    def poll(self) -> int | None:
        return self._popen.poll()
