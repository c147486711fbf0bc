"""darknet's `obj.data` files: read them as darknet does, write them with absolute paths.

darknet resolves every path in obj.data and in the image lists against its own working
directory, and the farm runs each attempt in a directory of its own, so the farm always
hands darknet absolute paths.
"""
from __future__ import annotations

import os
from pathlib import Path

from farm.errors import BadInput

PATH_KEYS = ("train", "valid", "names", "backup")


def read_obj_data(path: str | os.PathLike) -> dict[str, str]:
    """key=value pairs, spaces and tabs removed everywhere (darknet's strip())."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise BadInput(f"cannot read obj.data: {e.strerror}", path=str(path)) from None
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.replace(" ", "").replace("\t", "").replace("\r", "")
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise BadInput(f"line is not key=value: {raw!r}", path=str(path), line=n,
                           hint="obj.data holds lines like `train = /data/train.txt`")
        key, value = line.split("=", 1)
        values[key] = value
    return values


def resolve(value: str, base_dir: str | os.PathLike, fallback_dir: str | os.PathLike) -> str:
    """An absolute path for `value`: as darknet would see it from `base_dir` (the folder
    the user submitted from), else relative to `fallback_dir` (the obj.data's folder)."""
    if os.path.isabs(value):
        return value
    first = os.path.normpath(os.path.join(base_dir, value))
    if os.path.exists(first):
        return first
    second = os.path.normpath(os.path.join(fallback_dir, value))
    return second if os.path.exists(second) else first


def write_obj_data(path: str | os.PathLike, values: dict[str, str]) -> None:
    Path(path).write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
