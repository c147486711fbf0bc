"""One farm host over SSH: run a command, move files with SFTP, sync a dataset folder.

This is the only module that imports paramiko; its errors and socket errors become farm
errors here (HostUnreachable, UnknownHostKey, RemoteFileError, TransferFailed), so
nothing above catches paramiko types.

- Host keys are checked against the inventory's known_hosts and an unknown or changed
  key is refused, never added: a farm that trusts any key sends datasets and its Redis
  password to whoever answers on that address.
- Commands are argument lists. Each argument is quoted with shlex.quote, so the remote
  login shell (POSIX: bash or dash) hands the program exactly these arguments; no shell
  string is ever built from input.
- A transfer writes `<dest>.part` and renames it only after the sha256 of the whole file
  matched on both sides. A `.part` left by a cut transfer is resumed from its size once
  its prefix hashes the same on both sides, and restarted otherwise.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import paramiko

from farm.errors import BadInput, FarmError, HostUnreachable
from farm.remote.tarstream import TarFormatError, TarStream

CHUNK = 256 * 1024
#: sync_dir sends files at least this big one by one with push(), which can resume them.
RESUMABLE_SIZE = 8 * 1024 * 1024
#: SFTP sessions sync_dir writes small files through at once.
SYNC_CHANNELS = 2
#: Longest command line sent at once (OpenSSH refuses packets above 256 KiB).
MAX_COMMAND = 100_000

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

#: sync_dir's checklists on the host; left behind only by a crash, never in a manifest.
CHECKLIST_PREFIX = ".farm-sync-"
#: Check every .part against the checklist ($1); rename them all only if each matched.
VERIFY_AND_RENAME = """list=$1; shift
bad=$(LC_ALL=C sha256sum --quiet --strict -c -- "$list" 2>/dev/null); rc=$?
rm -f -- "$list"
if [ "$rc" -ne 0 ]; then printf '%s\\n' "$bad"; exit 3; fi
for f; do mv -f -- "$f.part" "$f" || exit 1; done"""


class UnknownHostKey(BadInput):
    """The host's key is not in known_hosts, or differs from it. Never retried."""


class TransferFailed(FarmError):
    """The bytes that arrived do not hash like the bytes sent."""


class RemoteFileError(FarmError):
    """A file operation on the host failed (no such file, permission, disk full)."""


class RemoteTimeout(FarmError):
    """A remote command did not finish in time."""


@dataclass(frozen=True)
class Transfer:
    """What one push or pull did."""

    path: str            # the destination
    size: int
    sha256: str
    sent: int            # bytes moved by this call
    resumed_from: int    # 0: started from the first byte
    restarted: bool      # a `.part` was there but its prefix differed: it was discarded


@dataclass(frozen=True)
class Fetched:
    """What one fetch_files call moved."""

    files: int
    bytes: int


@dataclass(frozen=True)
class SyncResult:
    sent: tuple[str, ...]  # relative paths pushed by this call
    unchanged: int         # files already there with the same content
    bytes_sent: int


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


def sha256_file(path: Path, limit: int | None = None) -> "hashlib._Hash":
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left = None if left is None else left - len(chunk)
    return h


def _batches(items: list[str], fixed: int = 200) -> Iterator[list[str]]:
    """Split arguments so that no command line exceeds MAX_COMMAND."""
    batch, size = [], fixed
    for item in items:
        cost = len(shlex.quote(item)) + 1
        if batch and size + cost > MAX_COMMAND:
            yield batch
            batch, size = [], fixed
        batch.append(item)
        size += cost
    if batch:
        yield batch


def _checklist_line(digest: str, name: str) -> str:
    """One line of a `sha256sum -c` checklist (names with \\ or newline escaped)."""
    if "\\" in name or "\n" in name:
        return f"\\{digest}  " + name.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {name}\n"


def _parse_sha256sum(text: str) -> dict[str, str]:
    """{path: digest} from sha256sum output (names with \\ or newline come escaped)."""
    out = {}
    for line in text.splitlines():
        if not line:
            continue
        escaped = line.startswith("\\")
        digest, _, name = line.lstrip("\\").partition("  ")
        if escaped:
            name = name.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
        out[name] = digest
    return out


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
    def _hint(self) -> str:
        return (f"check that {self.name} is up and sshd listens on {self.address}:{self.port} "
                f"(ssh -p {self.port} {self.user}@{self.address} true), or run "
                f"`farm hosts check {self.name}`")

    def _unreachable(self, why: str) -> HostUnreachable:
        return HostUnreachable(f"{self.name} did not answer SSH within {self.timeout:g}s "
                               f"({self.address}:{self.port}: {why})", hint=self._hint,
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
        self._ssh()

    def _ssh(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self._client = self._connect()
        return self._client

    def _sftp(self) -> paramiko.SFTPClient:
        client = self._ssh()  # a reconnect also drops the old SFTP session
        if self._sftp_client is None:
            self._sftp_client = self._open_sftp(client)
        return self._sftp_client

    def _open_sftp(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        with self._talking("opening SFTP"):
            sftp = client.open_sftp()
        # A host that vanishes mid-transfer (no reset, just silence) must end in
        # HostUnreachable, not in a read that blocks for ever.
        sftp.get_channel().settimeout(max(self.timeout, 30.0))
        return sftp

    @contextmanager
    def _talking(self, action: str) -> Iterator[None]:
        """Translate what paramiko and sockets raise while `action` runs."""
        try:
            yield
        except FarmError:
            raise
        except (paramiko.SSHException, EOFError, TimeoutError, ConnectionError) as e:
            self.close()
            raise HostUnreachable(f"lost the SSH connection to {self.name} while {action}: "
                                  f"{e or type(e).__name__}", hint=self._hint,
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
        client = self._ssh()
        with self._talking(f"running {argv[0]}"):
            chan = client.get_transport().open_session(timeout=self.timeout)
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

    def _check(self, argv: list[str], what: str, timeout: float | None = None) -> str:
        code, out, err = self.run(argv, timeout)
        if code != 0:
            raise RemoteFileError(f"{self.name}: {what} failed (exit {code}): "
                                  f"{err.strip() or out.strip()}",
                                  hint="check the path and free space on that host")
        return out

    def sha256(self, path: str, timeout: float | None = None) -> str:
        """The sha256 of a file on the host, computed there."""
        out = self._check(["sha256sum", "--", path], f"sha256sum {path}",
                          timeout or self.timeout * 30)
        return out.split()[0].lstrip("\\")

    def _prefix_sha256(self, path: str, size: int) -> str:
        out = self._check(["sh", "-c", 'head -c "$1" -- "$2" | sha256sum', "sh", str(size), path],
                          f"hashing the first {size} bytes of {path}", self.timeout * 30)
        return out.split()[0]

    def _makedirs(self, sftp: paramiko.SFTPClient, dirs: Iterable[str]) -> None:
        """`mkdir -p` over SFTP: a round trip per folder costs far less than a command."""
        known: set[str] = set()

        def ensure(d: str) -> None:
            if d in ("", ".", "/") or d in known:
                return
            try:
                st = sftp.stat(d)
            except FileNotFoundError:
                ensure(posixpath.dirname(d))
                sftp.mkdir(d)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise RemoteFileError(f"{self.name}:{d} exists and is not a folder",
                                          hint="move it away or choose another destination")
            known.add(d)
        for d in sorted(set(dirs)):
            ensure(d)

    # -- files ---------------------------------------------------------------------------------
    def push(self, local: str | os.PathLike, remote: str,
             progress: Progress | None = None) -> Transfer:
        """Copy a local file to `remote` on the host (resuming `remote.part` if present)."""
        local = Path(local)
        if not local.is_file():
            raise BadInput("file to push not found", path=str(local))
        size = local.stat().st_size
        part = remote + ".part"
        action = f"pushing {local} to {self.name}:{remote}"
        sftp = self._sftp()
        with self._talking(action):
            self._makedirs(sftp, [posixpath.dirname(remote)])
            try:
                have = sftp.stat(part).st_size
            except FileNotFoundError:
                have = 0
            h, resumed, restarted = _resume_point(
                have, size, lambda: sha256_file(local, have),
                lambda: self._prefix_sha256(part, have))
            with open(local, "rb") as src, sftp.open(part, "r+b" if resumed else "wb") as dst:
                dst.set_pipelined(True)
                src.seek(resumed)
                dst.seek(resumed)
                _copy(src, dst, h, resumed, size, progress)
            digest = h.hexdigest()
            there = self.sha256(part)
            if there != digest:
                sftp.remove(part)
                raise TransferFailed(f"{action}: sha256 differs after the transfer "
                                     f"(sent {digest[:16]}…, {self.name} has {there[:16]}…)",
                                     hint="the partial file was removed; push again")
            sftp.posix_rename(part, remote)
        return Transfer(remote, size, digest, size - resumed, resumed, restarted)

    def pull(self, remote: str, local: str | os.PathLike,
             progress: Progress | None = None) -> Transfer:
        """Copy `remote` from the host to a local file (resuming `local.part` if present)."""
        local = Path(local)
        part = local.with_name(local.name + ".part")
        local.parent.mkdir(parents=True, exist_ok=True)
        action = f"pulling {self.name}:{remote} to {local}"
        sftp = self._sftp()
        with self._talking(action):
            try:
                size = sftp.stat(remote).st_size
            except FileNotFoundError:
                raise RemoteFileError(f"{self.name}:{remote} not found",
                                      hint=f"check the path on {self.name}") from None
            have = part.stat().st_size if part.exists() else 0
            h, resumed, restarted = _resume_point(
                have, size, lambda: sha256_file(part), lambda: self._prefix_sha256(remote, have))
            with sftp.open(remote, "rb") as src, open(part, "r+b" if resumed else "wb") as dst:
                src.seek(resumed)
                dst.seek(resumed)
                src.prefetch(size)
                _copy(src, dst, h, resumed, size, progress)
            digest = h.hexdigest()
            there = self.sha256(remote)
            if there != digest:
                part.unlink()
                raise TransferFailed(f"{action}: sha256 differs after the transfer "
                                     f"({self.name} has {there[:16]}…, received {digest[:16]}…)",
                                     hint="the partial file was removed; pull again")
        os.replace(part, local)
        return Transfer(str(local), size, digest, size - resumed, resumed, restarted)

    def fetch_files(self, remote_dir: str, expected: dict[str, str], local_dir: str | os.PathLike,
                    progress: Progress | None = None) -> Fetched:
        """Pull many small files in one `tar` stream: {relative path: sha256} from
        `remote_dir` into `local_dir`, each written to `.part`, checked, then renamed.

        One stream instead of an SFTP round trip per file (bench_sftp.py). The names
        travel on tar's stdin, never on a command line; only regular files with exactly
        the names asked for are written, so a hostile host cannot place anything else.
        """
        local_dir = Path(local_dir)
        names = sorted(expected)
        for rel in names:
            check_relative(rel)
        if not names:
            return Fetched(0, 0)
        todo, moved = set(names), 0
        action = f"fetching {len(names)} files from {self.name}:{remote_dir}"
        client = self._ssh()
        with self._talking(action):
            chan = client.get_transport().open_session(timeout=self.timeout)
            chan.settimeout(max(self.timeout, 30.0))
            try:
                chan.exec_command(shlex.join(["tar", "-C", remote_dir, "--null", "-T", "-",
                                              "-cf", "-"]))
                feeder = threading.Thread(target=_feed, args=(chan, names), daemon=True)
                feeder.start()
                stream, made = TarStream(chan.recv), set()
                for name, kind, _ in stream.members():
                    if kind != "0" or name not in todo:
                        continue  # folders, or anything not asked for
                    moved += _receive(stream.chunks(), local_dir / name, expected[name],
                                      self.name, made)
                    todo.discard(name)
                    if progress:
                        progress(len(names) - len(todo), len(names))
                feeder.join(self.timeout)
                code = chan.recv_exit_status()
                err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
            except TarFormatError as e:
                if client.get_transport().is_active():  # the link is fine: the data is not
                    raise TransferFailed(f"{action}: {e}", hint="is GNU tar installed there?"
                                         ) from None
                self.close()
                raise HostUnreachable(f"lost the SSH connection to {self.name} while "
                                      f"{action}: {e}", hint=self._hint,
                                      host=self.name) from None
            finally:
                chan.close()
        if todo or code != 0:
            missing = sorted(todo)
            raise RemoteFileError(
                f"{self.name}: {len(missing)} of {len(names)} files did not arrive from "
                f"{remote_dir}" + (f", e.g. {missing[0]}" if missing else "") +
                f" (tar exit {code}: {err[:300]})",
                hint=f"check that folder on {self.name}; what arrived was kept and verified")
        return Fetched(len(names), moved)

    def read_file(self, remote: str, limit: int = 256 << 20) -> bytes:
        """The content of a small file on the host (a manifest, a list)."""
        sftp = self._sftp()
        with self._talking(f"reading {self.name}:{remote}"):
            try:
                with sftp.open(remote, "rb") as f:
                    size = f.stat().st_size
                    if size > limit:
                        raise RemoteFileError(f"{self.name}:{remote} is {size} bytes, more than "
                                              f"the {limit} expected", hint="is it the right file?")
                    f.prefetch(size)
                    return f.read()
            except FileNotFoundError:
                raise RemoteFileError(f"{self.name}:{remote} not found",
                                      hint=f"check the path on {self.name}") from None

    def manifest(self, remote_dir: str) -> dict[str, str]:
        """{relative path: sha256} of every file under `remote_dir` ({} if it is absent),
        from one remote command."""
        script = ('cd -- "$1" 2>/dev/null || exit 0; '
                  f"find . -type f ! -name '{CHECKLIST_PREFIX}*' -exec sha256sum -- {{}} +")
        out = self._check(["sh", "-c", script, "sh", remote_dir], f"hashing {remote_dir}",
                          self.timeout * 60)
        return {name.removeprefix("./"): d for name, d in _parse_sha256sum(out).items()}

    def sync_dir(self, local_dir: str | os.PathLike, remote_dir: str) -> SyncResult:
        """Make `remote_dir` hold every file of `local_dir`, sending only files missing
        there or different by content (sha256). Nothing on the host is deleted."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise BadInput("folder to sync not found", path=str(local_dir))
        mine = {p.relative_to(local_dir).as_posix(): p for p in sorted(local_dir.rglob("*"))
                if p.is_file()}
        digests = {rel: sha256_file(p).hexdigest() for rel, p in mine.items()}
        theirs = self.manifest(remote_dir)
        todo = [rel for rel in mine if theirs.get(rel) != digests[rel]]

        def where(rel: str) -> str:
            return posixpath.join(remote_dir, rel)
        small = [rel for rel in todo if mine[rel].stat().st_size < RESUMABLE_SIZE]
        sent_bytes = 0
        sftp = self._sftp()
        with self._talking(f"syncing {local_dir} to {self.name}:{remote_dir}"):
            self._makedirs(sftp, {posixpath.dirname(where(rel)) for rel in todo})
        for rel in todo:
            if rel not in small:
                sent_bytes += self.push(mine[rel], where(rel)).sent
        with self._talking(f"syncing {local_dir} to {self.name}:{remote_dir}"):
            # A .part already complete from an interrupted sync only needs its rename.
            sent_bytes += self._upload([(mine[rel], where(rel) + ".part") for rel in small
                                        if theirs.get(rel + ".part") != digests[rel]])
            self._verify_and_rename(sftp, remote_dir,
                                    {where(rel): digests[rel] for rel in small})
        return SyncResult(tuple(todo), len(mine) - len(todo), sent_bytes)

    def _upload(self, pairs: list[tuple[Path, str]]) -> int:
        """Write small files (local, remote path) over SYNC_CHANNELS SFTP sessions at once:
        one session waits on a round trip per file, two overlap them (bench_sftp.py)."""
        client = self._ssh()  # connected once here, not by each thread

        def upload(share: list[tuple[Path, str]]) -> int:
            sent = 0
            with self._open_sftp(client) as sftp:
                for local, remote in share:
                    with open(local, "rb") as src, sftp.open(remote, "wb") as dst:
                        dst.set_pipelined(True)
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
                            sent += len(chunk)
            return sent
        shares = [pairs[i::SYNC_CHANNELS] for i in range(SYNC_CHANNELS) if pairs[i::SYNC_CHANNELS]]
        if len(shares) <= 1:
            return sum(upload(share) for share in shares)
        with ThreadPoolExecutor(len(shares)) as pool:
            return sum(f.result() for f in [pool.submit(upload, share) for share in shares])

    def _verify_and_rename(self, sftp: paramiko.SFTPClient, remote_dir: str,
                           digests: dict[str, str]) -> None:
        """Check every sent `.part` against its sha256 on the host, then rename them all:
        one command per batch (the checklist travels by SFTP, the names as arguments)."""
        paths = list(digests)
        for n, batch in enumerate(_batches(paths)):
            checklist = posixpath.join(remote_dir, f"{CHECKLIST_PREFIX}{os.getpid()}-{n}.sha256")
            with sftp.open(checklist, "w") as f:
                f.write("".join(_checklist_line(digests[p], p + ".part") for p in batch))
            code, out, err = self.run(["sh", "-c", VERIFY_AND_RENAME, "sh", checklist, *batch],
                                      self.timeout * 60)
            if code == 3:
                bad = [line.rsplit(": ", 1)[0] for line in out.splitlines() if ": " in line]
                self._check(["rm", "-f", "--", *bad], "removing bad files")
                raise TransferFailed(f"{len(bad)} file(s) arrived on {self.name} with a "
                                     f"different sha256, e.g. {bad[0] if bad else '?'}",
                                     hint="they were removed; sync again")
            if code != 0:
                raise RemoteFileError(f"{self.name}: renaming the sent files failed "
                                      f"(exit {code}): {(err or out).strip()[:300]}",
                                      hint="check the path and free space on that host")


def check_relative(rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise BadInput(f"refusing to fetch {rel!r}: not a plain relative path",
                       hint="a manifest naming such a file was made by hand or is hostile")


def _feed(chan: paramiko.Channel, names: list[str]) -> None:
    """Write the file names to tar's stdin (a thread: tar writes while we still send)."""
    try:
        for batch in range(0, len(names), 512):
            chan.sendall(b"".join(n.encode() + b"\0" for n in names[batch:batch + 512]))
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the reader sees the broken stream and says so


def _receive(chunks: Iterable, dest: Path, digest: str, host: str, made: set) -> int:
    """Write one member to `dest.part`, check its sha256, rename; bytes written.
    `made`: folders already created by this fetch (one mkdir per folder, not per file)."""
    if dest.parent not in made:
        dest.parent.mkdir(parents=True, exist_ok=True)
        made.add(dest.parent)
    part = dest.with_name(dest.name + ".part")
    h, n = hashlib.sha256(), 0
    with open(part, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            h.update(chunk)
            n += len(chunk)
    if h.hexdigest() != digest:
        part.unlink()
        raise TransferFailed(f"{dest.name} from {host} has sha256 {h.hexdigest()[:16]}…, "
                             f"expected {digest[:16]}…",
                             hint="the file differs from its manifest on that host; "
                                  "package the dataset again there")
    os.replace(part, dest)
    return n


def _copy(src, dst, h, done: int, size: int, progress: Progress | None) -> None:
    """Stream src to dst from where they stand, hashing what passes."""
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        h.update(chunk)
        done += len(chunk)
        if progress:
            progress(done, size)


def _resume_point(have: int, size: int, here, there):
    """(hash so far, bytes to skip, restarted): resume a `.part` of `have` bytes only when
    its prefix hashes the same on both sides (`here()` is a hash object, `there()` a hex)."""
    if not have:
        return hashlib.sha256(), 0, False
    prefix = here() if have <= size else None
    if prefix is not None and prefix.hexdigest() == there():
        return prefix, have, False
    return hashlib.sha256(), 0, True
