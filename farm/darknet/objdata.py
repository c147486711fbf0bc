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


def parse_obj_data(text: str) -> tuple[dict[str, tuple[str, int]], list[tuple[int, str]]]:
    """key -> (value, line) as darknet reads them (spaces and tabs removed everywhere,
    the first of a repeated key wins), and the (line, text) of lines that are not key=value."""
    values: dict[str, tuple[str, int]] = {}
    bad: list[tuple[int, str]] = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.replace(" ", "").replace("\t", "").replace("\r", "").lstrip("\ufeff")
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            bad.append((n, raw.strip()))
            continue
        key, value = line.split("=", 1)
        values.setdefault(key, (value, n))
    return values, bad


def read_obj_data(path: str | os.PathLike) -> dict[str, str]:
    """key=value pairs of an obj.data; its first malformed line is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise BadInput(f"cannot read obj.data: {e.strerror}", path=str(path)) from None
    values, bad = parse_obj_data(text)
    if bad:
        raise BadInput(f"line is not key=value: {bad[0][1]!r}", path=str(path), line=bad[0][0],
                       hint="obj.data holds lines like `train = /data/train.txt`")
    return {k: v for k, (v, _) in values.items()}


def resolve(value: str, base_dir: str | os.PathLike,
            fallback_dir: str | os.PathLike | None = None) -> str:
    """An absolute path for `value`: as darknet would see it from `base_dir` (the folder
    the user submitted from) if it exists there, else under `fallback_dir` (the obj.data's
    folder) if it exists there, else under `base_dir` (so a message names the first place)."""
    if os.path.isabs(value):
        return value
    first = os.path.normpath(os.path.join(base_dir, value))
    if fallback_dir is None or os.path.exists(first):
        return first
    second = os.path.normpath(os.path.join(fallback_dir, value))
    return second if os.path.exists(second) else first


def write_obj_data(path: str | os.PathLike, values: dict[str, str]) -> None:
    Path(path).write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
