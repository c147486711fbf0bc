"""One farm host over SSH: its connection, its host key checked, commands run on it.

This is the only module that imports paramiko; its errors and socket errors become farm
errors here (HostUnreachable, UnknownHostKey, RemoteFileError, RemoteTimeout), so
nothing above catches paramiko types. Files are copied by farm.remote.transfer, through
the SFTP sessions and channels SSHHost opens.

- Host keys are checked against the inventory's known_hosts and an unknown or changed
  key is refused, never added: a farm that trusts any key sends datasets and its Redis
  password to whoever answers on that address.
- Commands are argument lists. Each argument is quoted with shlex.quote, so the remote
  login shell (POSIX: bash or dash) hands the program exactly these arguments; no shell
  string is ever built from input.
"""
from __future__ import annotations

import os
import select
import shlex
import socket
import time
from contextlib import contextmanager
from typing import Iterator

import paramiko

from farm.errors import BadInput, FarmError, HostUnreachable

CHUNK = 256 * 1024
#: what a broken SSH link raises while a stream is written (farm.remote.transfer's feeder)
LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


class UnknownHostKey(BadInput):
    """The host's key is not in known_hosts, or differs from it. Never retried."""


class RemoteFileError(FarmError):
    """A file operation on the host failed (no such file, permission, disk full)."""


class RemoteTimeout(FarmError):
    """A remote command did not finish in time."""

class _RejectAndRemember(paramiko.RejectPolicy):
    """RejectPolicy that keeps the refused key, so the message can show its fingerprint."""

    def __init__(self) -> None:
        self.refused: tuple[str, paramiko.PKey] | None = None

    def missing_host_key(self, client, hostname, key):
        self.refused = (hostname, key)
        super().missing_host_key(client, hostname, key)


def _keyscan_type(key: paramiko.PKey) -> str:
    name = key.get_name()
    if name.startswith("ecdsa"):
        return "ecdsa"
    return "rsa" if "rsa" in name else name.removeprefix("ssh-")


def _why(e: BaseException) -> str:
    """A socket error in words: `connection refused`, `timed out`, …"""
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        return "; ".join(sorted({_why(inner) for inner in e.errors.values()}))
    if isinstance(e, TimeoutError):
        return "timed out"
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).lower()

class SSHHost:
    """A farm host reached as `user@address:port` with a key, its host key pinned.

    One connection, opened on first use and again after it broke; use one SSHHost per
    thread.
    """

    def __init__(self, address: str, port: int, user: str, key_path: str, known_hosts: str,
                 timeout: float = 10.0, *, name: str | None = None):
        self.address, self.port, self.user = address, port, user
        self.key_path, self.known_hosts, self.timeout = key_path, known_hosts, timeout
        self.name = name or f"{address}:{port}"
        self._client: paramiko.SSHClient | None = None
        self._sftp_client: paramiko.SFTPClient | None = None

    @classmethod
    def from_host(cls, host, timeout: float = 10.0) -> "SSHHost":
        """From an inventory Host (farm.inventory)."""
        s = host.ssh
        return cls(host.address, s.port, s.user, s.key, s.known_hosts, timeout, name=host.name)

    def __repr__(self) -> str:
        return f"SSHHost({self.name}: {self.user}@{self.address}:{self.port})"

    def __enter__(self) -> "SSHHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for thing in (self._sftp_client, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection may fail; it is gone anyway
                    pass
        self._sftp_client = self._client = None

    # -- connection ------------------------------------------------------------------------
    @property
    def hint(self) -> str:
        return (f"check that {self.name} is up and sshd listens on {self.address}:{self.port} "
                f"(ssh -p {self.port} {self.user}@{self.address} true), or run "
                f"`farm hosts check {self.name}`")

    def _unreachable(self, why: str) -> HostUnreachable:
        return HostUnreachable(f"{self.name} did not answer SSH within {self.timeout:g}s "
                               f"({self.address}:{self.port}: {why})", hint=self.hint,
                               host=self.name)

    def _connect(self) -> paramiko.SSHClient:
        if not os.path.isfile(self.key_path):
            raise BadInput(f"SSH key for {self.name} not found", path=self.key_path,
                           hint="create it with ssh-keygen -t ed25519, or fix ssh.key in "
                                "the inventory")
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(self.known_hosts)
        except FileNotFoundError:
            raise UnknownHostKey(
                f"known_hosts file for {self.name} not found", path=self.known_hosts,
                hint=f"collect the host key once and check its fingerprint: "
                     f"ssh-keyscan -p {self.port} {self.address} >> {self.known_hosts}") from None
        except (OSError, paramiko.SSHException) as e:
            raise BadInput(f"cannot read known_hosts: {e}", path=self.known_hosts) from None
        policy = _RejectAndRemember()
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(self.address, port=self.port, username=self.user,
                           key_filename=self.key_path, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout,
                           channel_timeout=self.timeout, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise self._changed_key(e.key, e.expected_key) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise BadInput(f"SSH key for {self.name} is encrypted", path=self.key_path,
                           hint="the farm logs in unattended: use a key without a passphrase "
                                "kept 0600 for the farm user") from None
        except paramiko.AuthenticationException:
            client.close()
            raise HostUnreachable(
                f"{self.name} refused the SSH key {self.key_path} for user {self.user}",
                hint=f"add {self.key_path}.pub to ~{self.user}/.ssh/authorized_keys on "
                     f"{self.name}, or fix ssh.user/ssh.key in the inventory",
                host=self.name) from None
        except paramiko.SSHException as e:
            client.close()
            if policy.refused:
                raise self._unknown_key(*policy.refused) from None
            raise self._unreachable(str(e) or type(e).__name__) from None
        except (OSError, EOFError) as e:
            client.close()
            raise self._unreachable(_why(e)) from None
        transport = client.get_transport()
        transport.set_keepalive(30)
        # Without TCP_NODELAY every small SFTP request waits out the peer's delayed ACK
        # (~40 ms): a dataset of small files then crawls at 25 files a second.
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def _unknown_key(self, entry: str, key: paramiko.PKey) -> UnknownHostKey:
        return UnknownHostKey(
            f"{self.name} ({entry}) offered host key {key.get_name()} {key.fingerprint}, "
            f"which is not in this known_hosts; refusing to connect",
            path=self.known_hosts,
            hint=f"check that fingerprint on {self.name} (ssh-keygen -lf "
                 f"/etc/ssh/ssh_host_{_keyscan_type(key)}_key.pub), then add the key: "
                 f"ssh-keyscan -p {self.port} -t {_keyscan_type(key)} {self.address} >> "
                 f"{self.known_hosts}")

    def _changed_key(self, got: paramiko.PKey, expected: paramiko.PKey) -> UnknownHostKey:
        entry = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return UnknownHostKey(
            f"the host key of {self.name} ({entry}) CHANGED: it offered {got.get_name()} "
            f"{got.fingerprint}, known_hosts has {expected.get_name()} {expected.fingerprint}; "
            f"refusing to connect (someone may be in the middle)",
            path=self.known_hosts,
            hint=f"if {self.name} was reinstalled, check the new fingerprint on it, then "
                 f"ssh-keygen -R '{entry}' -f {self.known_hosts} and "
                 f"ssh-keyscan -p {self.port} {self.address} >> {self.known_hosts}")

    def connect(self) -> None:
        """Open the connection now (otherwise the first command does)."""
        self.client()

    def client(self) -> paramiko.SSHClient:
        """The connection, opened again when it broke."""
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self._client = self._connect()
        return self._client

    def sftp(self) -> paramiko.SFTPClient:
        """The host's SFTP session (one per connection)."""
        client = self.client()  # a reconnect also drops the old SFTP session
        if self._sftp_client is None:
            self._sftp_client = self.open_sftp(client)
        return self._sftp_client

    def open_sftp(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        """Another SFTP session on `client` (transfers overlap their round trips)."""
        with self.talking("opening SFTP"):
            sftp = client.open_sftp()
        # A host that vanishes mid-transfer (no reset, just silence) must end in
        # HostUnreachable, not in a read that blocks for ever.
        sftp.get_channel().settimeout(max(self.timeout, 30.0))
        return sftp

    def session(self, client: paramiko.SSHClient) -> paramiko.Channel:
        """A channel on `client` to run one command on (the caller closes it)."""
        return client.get_transport().open_session(timeout=self.timeout)

    @property
    def connected(self) -> bool:
        """The connection is up (a broken stream then means broken data, not a lost host)."""
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    @contextmanager
    def talking(self, action: str) -> Iterator[None]:
        """Translate what paramiko and sockets raise while `action` runs."""
        try:
            yield
        except FarmError:
            raise
        except (paramiko.SSHException, EOFError, TimeoutError, ConnectionError) as e:
            self.close()
            raise HostUnreachable(f"lost the SSH connection to {self.name} while {action}: "
                                  f"{e or type(e).__name__}", hint=self.hint,
                                  host=self.name) from None
        except OSError as e:  # an SFTP status from the server (local files are checked apart)
            raise RemoteFileError(f"{self.name}: {action} failed: {e.strerror or e}",
                                  hint="check the path and free space on that host") from None

    # -- commands ------------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run `argv` on the host; (exit code, stdout, stderr). 127: no such program.

        On timeout the channel is closed and RemoteTimeout raised; a program that
        ignores its closed pipes may go on running on the host.
        """
        if isinstance(argv, (str, bytes)) or not argv:
            raise TypeError("run() takes a non-empty list of arguments, never a shell string")
        command = shlex.join(str(a) for a in argv)
        timeout = self.timeout if timeout is None else timeout
        client = self.client()
        with self.talking(f"running {argv[0]}"):
            chan = self.session(client)
            try:
                chan.exec_command(command)
                chan.shutdown_write()
                out, err = self._collect(chan, timeout, command)
                return chan.recv_exit_status(), out, err
            finally:
                chan.close()

    def _collect(self, chan: paramiko.Channel, timeout: float, command: str) -> tuple[str, str]:
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            if chan.recv_ready():
                out += chan.recv(CHUNK)
                busy = True
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
                busy = True
            if busy:
                continue
            if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise RemoteTimeout(f"`{command[:200]}` on {self.name} did not finish within "
                                    f"{timeout:g}s", hint="raise the timeout, or look at the host")
            # The channel's pipe wakes us for stdout and EOF, not for stderr or the exit
            # status: hence the short poll.
            select.select([chan], [], [], min(left, 0.02))
        return out.decode(errors="replace"), err.decode(errors="replace")

    def check(self, argv: list[str], what: str, timeout: float | None = None) -> str:
        """`run`, with a failure raised as RemoteFileError; its stdout."""
        code, out, err = self.run(argv, timeout)
        if code != 0:
            raise RemoteFileError(f"{self.name}: {what} failed (exit {code}): "
                                  f"{err.strip() or out.strip()}",
                                  hint="check the path and free space on that host")
        return out

    def sha256(self, path: str, timeout: float | None = None) -> str:
        """The sha256 of a file on the host, computed there."""
        out = self.check(["sha256sum", "--", path], f"sha256sum {path}",
                          timeout or self.timeout * 30)
        return out.split()[0].lstrip("\\")

    def sha256_prefix(self, path: str, size: int) -> str:
        """The sha256 of the first `size` bytes of a file on the host."""
        out = self.check(["sh", "-c", 'head -c "$1" -- "$2" | sha256sum', "sh", str(size), path],
                          f"hashing the first {size} bytes of {path}", self.timeout * 30)
        return out.split()[0]
