"""Images judged by their first and last bytes only (magic number, JPEG end marker FFD9,
PNG IEND chunk): what OpenCV would fail to read, without decoding a pixel."""
from __future__ import annotations

import os

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .ppm .pgm .pbm .tif .tiff .webp".split())


def image_problem(path: str) -> str | None:
    """Why OpenCV would fail to read `path` (missing, empty, not an image, truncated),
    judged from its first and last bytes; None when it looks whole."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    try:
        head = os.read(fd, _IMAGE_PEEK)
        if len(head) < _IMAGE_PEEK:  # small file: all of it is in hand
            tail = head[-1024:]
        else:
            size = os.fstat(fd).st_size
            tail = os.pread(fd, 1024, size - 1024)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    finally:
        os.close(fd)
    return _image_bytes_problem(head, tail)


_IMAGE_PEEK = 4096


def _image_bytes_problem(head: bytes, tail: bytes) -> str | None:
    if len(head) < 32:
        return f"only {len(head)} bytes, too small to be an image"
    kind = _image_kind(head)
    if kind is None:
        return f"not an image OpenCV reads (starts with {head[:8].hex(' ')})"
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated JPEG: no end-of-image marker (FF D9) at the end"
    if kind == "png" and b"IEND" not in tail:
        return "truncated PNG: no IEND chunk at the end"
    return None


def _image_kind(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:1] == b"P" and head[1:2] in b"123456":
        return "pnm"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None
