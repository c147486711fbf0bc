"""A real OpenSSH sshd on loopback, for the tests and bench/bench_sftp.py.

The server writes its own host key, a user key, authorized_keys, an sshd_config and a
known_hosts, and runs /usr/sbin/sshd on a free 127.0.0.1 port (as root: this machine and
CI run as root). With `user`, it lets only that (unprivileged) account in, so a test can
act as several hosts with separate users, folders and ports.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from farm.remote.ssh import SSHHost
from tests.conftest import free_port

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True)


class LoopbackSSHD:
    """A real sshd on 127.0.0.1 with its own keys; also used by bench/bench_sftp.py."""

    def __init__(self, root: Path, user: str = "root"):
        self.root, self.user = root, user
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = root / "host_ed25519"
        self.user_key = root / "user_ed25519"
        self.known_hosts = root / "known_hosts"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None
        for key in (self.host_key, self.user_key):
            if not key.exists():
                keygen(key)
        (root / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {root / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "UseDNS no", "PrintMotd no", "MaxSessions 64", "MaxStartups 64",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", f"AllowUsers {user}", ""]))
        for path in (self.user_key, root / "authorized_keys"):  # read as `user` by sshd
            path.chmod(0o644 if path.name == "authorized_keys" else 0o600)
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def start(self) -> "LoopbackSSHD":
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refused {self.config}: {check.stderr}")
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not start on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Stop the listener and every session it forked: the host is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.kill()
        self.proc.wait(10)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

    def host(self, *, name: str = "loopback", timeout: float = 5.0,
             known_hosts: Path | None = None) -> SSHHost:
        return SSHHost("127.0.0.1", self.port, self.user, str(self.user_key),
                       str(known_hosts or self.known_hosts), timeout, name=name)


def need_root_sshd() -> None:
    if not os.path.exists(SSHD):
        pytest.fail("OpenSSH sshd is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("a loopback sshd for these tests must run as root (as on CI)")
