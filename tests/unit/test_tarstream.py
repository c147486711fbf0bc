"""farm.remote.tarstream against archives Python's tarfile writes in the three formats GNU
tar may send (GNU, POSIX pax, old ustar), fed in awkward slices as a channel would."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from farm.remote.tarstream import TarFormatError, TarStream

LONG = "data/s0/" + "deep/" * 30 + "name with spaces é.jpg"  # > 100 bytes: a long name


def _archive(fmt: int, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        folder = tarfile.TarInfo("data")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


def _feeder(data: bytes, sizes=(1, 7, 511, 513, 4096, 70_000)):
    """recv() that returns uneven slices, then b"" at the end."""
    state = {"at": 0, "i": 0}

    def recv(n: int) -> bytes:
        size = min(n, sizes[state["i"] % len(sizes)])
        state["i"] += 1
        out = data[state["at"]:state["at"] + size]
        state["at"] += len(out)
        return out
    return recv


def _read_all(stream: TarStream) -> dict[str, tuple[str, bytes]]:
    out = {}
    for name, kind, size in stream.members():
        data = b"".join(bytes(c) for c in stream.chunks()) if kind == "0" else b""
        assert kind != "0" or len(data) == size
        out[name] = (kind, data)
    return out


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_names_types_and_bytes_survive_any_slicing(fmt):
    files = {"data/a.jpg": os.urandom(1000), "data/empty.txt": b"",
             "data/b.txt": b"0 0.5 0.5 0.1 0.1\n", "data/big.bin": os.urandom(300_000)}
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold it without a prefix split
        files[LONG] = b"long"
    got = _read_all(TarStream(_feeder(_archive(fmt, files))))
    assert {n: d for n, (k, d) in got.items() if k == "0"} == files
    assert got["data/"][0] == "5" and got["data/link"][0] == "2"  # yielded, never followed


def test_skipping_a_member_unread_lands_on_the_next_one():
    files = {"x/1": b"a" * 700, "x/2": b"b" * 5, "x/3": b"c" * 1025}
    stream = TarStream(_feeder(_archive(tarfile.GNU_FORMAT, files)))
    seen = {}
    for name, kind, _ in stream.members():
        if name == "x/2":
            seen[name] = hashlib.sha256(b"".join(bytes(c) for c in stream.chunks())).hexdigest()
        elif kind == "0":
            seen[name] = None
    assert seen == {"x/1": None, "x/2": hashlib.sha256(b"b" * 5).hexdigest(), "x/3": None}


def test_a_cut_stream_and_a_stream_that_is_not_tar_are_errors():
    data = _archive(tarfile.GNU_FORMAT, {"d/a": os.urandom(5000)})
    with pytest.raises(TarFormatError, match="ended inside"):
        _read_all(TarStream(_feeder(data[:3000])))
    with pytest.raises(TarFormatError, match="checksum"):
        _read_all(TarStream(_feeder(b"<html>not a tar</html>" + b"x" * 1000)))
