"""Files copied between here and a farm host, over SFTP and tar streams (farm.remote.ssh
holds the connection and runs the commands; only it speaks paramiko).

- A transfer writes `<dest>.part` and renames it only after the sha256 of the whole file
  matched on both sides. A `.part` left by a cut transfer is resumed from its size once
  its prefix hashes the same on both sides, and restarted otherwise.
- `sync_dir` sends only what differs by content; `fetch_files` pulls many small files in
  one tar stream, each checked against its manifest before it is renamed into place.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shlex
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from farm.errors import BadInput, FarmError, HostUnreachable
from farm.remote.ssh import CHUNK, LINK_ERRORS, RemoteFileError, SSHHost
from farm.remote.tarstream import TarFormatError, TarStream

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


class TransferFailed(FarmError):
    """The bytes that arrived do not hash like the bytes sent."""


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


def sha256_file(path: Path, limit: int | None = None) -> "hashlib._Hash":
    """The sha256 of a local file (of its first `limit` bytes), as a hash object."""
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


def _makedirs(host: SSHHost, sftp, dirs: Iterable[str]) -> None:
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
                raise RemoteFileError(f"{host.name}:{d} exists and is not a folder",
                                      hint="move it away or choose another destination")
        known.add(d)
    for d in sorted(set(dirs)):
        ensure(d)


def push(host: SSHHost, local: str | os.PathLike, remote: str,
         progress: Progress | None = None) -> Transfer:
    """Copy a local file to `remote` on `host` (resuming `remote.part` if present)."""
    local = Path(local)
    if not local.is_file():
        raise BadInput("file to push not found", path=str(local))
    size = local.stat().st_size
    part = remote + ".part"
    action = f"pushing {local} to {host.name}:{remote}"
    sftp = host.sftp()
    with host.talking(action):
        _makedirs(host, sftp, [posixpath.dirname(remote)])
        try:
            have = sftp.stat(part).st_size
        except FileNotFoundError:
            have = 0
        h, resumed, restarted = _resume_point(
            have, size, lambda: sha256_file(local, have),
            lambda: host.sha256_prefix(part, have))
        with open(local, "rb") as src, sftp.open(part, "r+b" if resumed else "wb") as dst:
            dst.set_pipelined(True)
            src.seek(resumed)
            dst.seek(resumed)
            _copy(src, dst, h, resumed, size, progress)
        digest = h.hexdigest()
        there = host.sha256(part)
        if there != digest:
            sftp.remove(part)
            raise TransferFailed(f"{action}: sha256 differs after the transfer "
                                 f"(sent {digest[:16]}…, {host.name} has {there[:16]}…)",
                                 hint="the partial file was removed; push again")
        sftp.posix_rename(part, remote)
    return Transfer(remote, size, digest, size - resumed, resumed, restarted)

def pull(host: SSHHost, remote: str, local: str | os.PathLike,
         progress: Progress | None = None) -> Transfer:
    """Copy `remote` from `host` to a local file (resuming `local.part` if present)."""
    local = Path(local)
    part = local.with_name(local.name + ".part")
    local.parent.mkdir(parents=True, exist_ok=True)
    action = f"pulling {host.name}:{remote} to {local}"
    sftp = host.sftp()
    with host.talking(action):
        try:
            size = sftp.stat(remote).st_size
        except FileNotFoundError:
            raise RemoteFileError(f"{host.name}:{remote} not found",
                                  hint=f"check the path on {host.name}") from None
        have = part.stat().st_size if part.exists() else 0
        h, resumed, restarted = _resume_point(
            have, size, lambda: sha256_file(part), lambda: host.sha256_prefix(remote, have))
        with sftp.open(remote, "rb") as src, open(part, "r+b" if resumed else "wb") as dst:
            src.seek(resumed)
            dst.seek(resumed)
            src.prefetch(size)
            _copy(src, dst, h, resumed, size, progress)
        digest = h.hexdigest()
        there = host.sha256(remote)
        if there != digest:
            part.unlink()
            raise TransferFailed(f"{action}: sha256 differs after the transfer "
                                 f"({host.name} has {there[:16]}…, received {digest[:16]}…)",
                                 hint="the partial file was removed; pull again")
    os.replace(part, local)
    return Transfer(str(local), size, digest, size - resumed, resumed, restarted)

def fetch_files(host: SSHHost, remote_dir: str, expected: dict[str, str],
                local_dir: str | os.PathLike, progress: Progress | None = None) -> Fetched:
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
    action = f"fetching {len(names)} files from {host.name}:{remote_dir}"
    client = host.client()
    with host.talking(action):
        chan = host.session(client)
        chan.settimeout(max(host.timeout, 30.0))
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
                                  host.name, made)
                todo.discard(name)
                if progress:
                    progress(len(names) - len(todo), len(names))
            feeder.join(host.timeout)
            code = chan.recv_exit_status()
            err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
        except TarFormatError as e:
            if host.connected:  # the link is fine: the data is not
                raise TransferFailed(f"{action}: {e}", hint="is GNU tar installed there?"
                                     ) from None
            host.close()
            raise HostUnreachable(f"lost the SSH connection to {host.name} while "
                                  f"{action}: {e}", hint=host.hint,
                                  host=host.name) from None
        finally:
            chan.close()
    if todo or code != 0:
        missing = sorted(todo)
        raise RemoteFileError(
            f"{host.name}: {len(missing)} of {len(names)} files did not arrive from "
            f"{remote_dir}" + (f", e.g. {missing[0]}" if missing else "") +
            f" (tar exit {code}: {err[:300]})",
            hint=f"check that folder on {host.name}; what arrived was kept and verified")
    return Fetched(len(names), moved)

def read_file(host: SSHHost, remote: str, limit: int = 256 << 20) -> bytes:
    """The content of a small file on the host (a manifest, a list)."""
    sftp = host.sftp()
    with host.talking(f"reading {host.name}:{remote}"):
        try:
            with sftp.open(remote, "rb") as f:
                size = f.stat().st_size
                if size > limit:
                    raise RemoteFileError(f"{host.name}:{remote} is {size} bytes, more than "
                                          f"the {limit} expected", hint="is it the right file?")
                f.prefetch(size)
                return f.read()
        except FileNotFoundError:
            raise RemoteFileError(f"{host.name}:{remote} not found",
                                  hint=f"check the path on {host.name}") from None

def manifest(host: SSHHost, remote_dir: str) -> dict[str, str]:
    """{relative path: sha256} of every file under `remote_dir` ({} if it is absent),
    from one remote command."""
    script = ('cd -- "$1" 2>/dev/null || exit 0; '
              f"find . -type f ! -name '{CHECKLIST_PREFIX}*' -exec sha256sum -- {{}} +")
    out = host.check(["sh", "-c", script, "sh", remote_dir], f"hashing {remote_dir}",
                      host.timeout * 60)
    return {name.removeprefix("./"): d for name, d in _parse_sha256sum(out).items()}

def sync_dir(host: SSHHost, local_dir: str | os.PathLike, remote_dir: str) -> SyncResult:
    """Make `remote_dir` hold every file of `local_dir`, sending only files missing
    there or different by content (sha256). Nothing on the host is deleted."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise BadInput("folder to sync not found", path=str(local_dir))
    mine = {p.relative_to(local_dir).as_posix(): p for p in sorted(local_dir.rglob("*"))
            if p.is_file()}
    digests = {rel: sha256_file(p).hexdigest() for rel, p in mine.items()}
    theirs = manifest(host, remote_dir)
    todo = [rel for rel in mine if theirs.get(rel) != digests[rel]]

    def where(rel: str) -> str:
        return posixpath.join(remote_dir, rel)
    small = [rel for rel in todo if mine[rel].stat().st_size < RESUMABLE_SIZE]
    sent_bytes = 0
    sftp = host.sftp()
    with host.talking(f"syncing {local_dir} to {host.name}:{remote_dir}"):
        _makedirs(host, sftp, {posixpath.dirname(where(rel)) for rel in todo})
    for rel in todo:
        if rel not in small:
            sent_bytes += push(host, mine[rel], where(rel)).sent
    with host.talking(f"syncing {local_dir} to {host.name}:{remote_dir}"):
        # A .part already complete from an interrupted sync only needs its rename.
        sent_bytes += _upload(host, [(mine[rel], where(rel) + ".part") for rel in small
                                    if theirs.get(rel + ".part") != digests[rel]])
        _verify_and_rename(host, sftp, remote_dir,
                                {where(rel): digests[rel] for rel in small})
    return SyncResult(tuple(todo), len(mine) - len(todo), sent_bytes)

def _upload(host: SSHHost, pairs: list[tuple[Path, str]]) -> int:
    """Write small files (local, remote path) over SYNC_CHANNELS SFTP sessions at once:
    one session waits on a round trip per file, two overlap them (bench_sftp.py)."""
    client = host.client()  # connected once here, not by each thread

    def upload(share: list[tuple[Path, str]]) -> int:
        sent = 0
        with host.open_sftp(client) as sftp:
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

def _verify_and_rename(host: SSHHost, sftp, remote_dir: str,
                       digests: dict[str, str]) -> None:
    """Check every sent `.part` against its sha256 on the host, then rename them all:
    one command per batch (the checklist travels by SFTP, the names as arguments)."""
    paths = list(digests)
    for n, batch in enumerate(_batches(paths)):
        checklist = posixpath.join(remote_dir, f"{CHECKLIST_PREFIX}{os.getpid()}-{n}.sha256")
        with sftp.open(checklist, "w") as f:
            f.write("".join(_checklist_line(digests[p], p + ".part") for p in batch))
        code, out, err = host.run(["sh", "-c", VERIFY_AND_RENAME, "sh", checklist, *batch],
                                  host.timeout * 60)
        if code == 3:
            bad = [line.rsplit(": ", 1)[0] for line in out.splitlines() if ": " in line]
            host.check(["rm", "-f", "--", *bad], "removing bad files")
            raise TransferFailed(f"{len(bad)} file(s) arrived on {host.name} with a "
                                 f"different sha256, e.g. {bad[0] if bad else '?'}",
                                 hint="they were removed; sync again")
        if code != 0:
            raise RemoteFileError(f"{host.name}: renaming the sent files failed "
                                  f"(exit {code}): {(err or out).strip()[:300]}",
                                  hint="check the path and free space on that host")


def check_relative(rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise BadInput(f"refusing to fetch {rel!r}: not a plain relative path",
                       hint="a manifest naming such a file was made by hand or is hostile")


def _feed(chan, names: list[str]) -> None:
    """Write the file names to tar's stdin (a thread: tar writes while we still send)."""
    try:
        for batch in range(0, len(names), 512):
            chan.sendall(b"".join(n.encode() + b"\0" for n in names[batch:batch + 512]))
        chan.shutdown_write()
    except LINK_ERRORS:
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
