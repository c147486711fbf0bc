"""A YAML document that remembers where each key and value was written.

Every message about a user's file must name its line; PyYAML only keeps line marks on
its node tree, so the tree is walked once and each path (("parameters", "lr"), ...) is
mapped to the line it came from. Lookups fall back to the nearest enclosing line.
Used by the sweep spec (farm.sweeps.spec), whose words its messages use.
"""
from __future__ import annotations

import difflib
import math
import os
from typing import Any

import yaml

from farm.errors import BadInput


class YamlDoc:
    """A YAML mapping and the line of every key and value in it, so that every error
    can say `file:line: what` (PyYAML keeps the marks only on the node tree)."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.folder = os.path.dirname(path)
        self.lines: dict[tuple, int] = {}
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise BadInput(f"not valid YAML: {getattr(e, 'problem', None) or e}", path=path,
                           line=mark.line + 1 if mark else None,
                           hint="check the indentation and the colons") from None
        finally:
            loader.dispose()
        if node is not None:
            self._walk(node, ())
        if not isinstance(self.data, dict):
            raise BadInput("a sweep spec is a YAML mapping (base:, parameters:, ...)",
                           path=path, line=1, hint="see `farm sweep submit --help`")

    def _walk(self, node: yaml.Node, where: tuple) -> None:
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key, value in node.value:
                k = where + (key.value,)
                if key.value in seen:
                    raise BadInput(f"{'.'.join(map(str, k))} is given twice", path=self.path,
                                   line=key.start_mark.line + 1, hint="keep one of them")
                seen.add(key.value)
                self.lines[k] = key.start_mark.line + 1
                self._walk(value, k)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, where + (i,))

    def line(self, where: tuple) -> int | None:
        while where not in self.lines and where:
            where = where[:-1]
        return self.lines.get(where)

    def error(self, where: tuple, reason: str, hint: str | None = None) -> BadInput:
        return BadInput(reason, path=self.path, line=self.line(where), hint=hint)

    def get(self, where: tuple, default: Any = None) -> Any:
        value: Any = self.data
        for key in where:
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    def mapping(self, where: tuple, known: tuple | None, required: bool = False) -> dict:
        value = self.get(where)
        name = ".".join(map(str, where)) or "the spec"
        if value is None:
            if required:
                raise self.error(where[:-1], f"{name} is missing",
                                 "see the example in `farm sweep submit --help`")
            return {}
        if not isinstance(value, dict):
            raise self.error(where, f"{name} must be a mapping (key: value lines)")
        for key in value:
            if known is not None and key not in known:
                raise self.error(where + (key,), f"unknown key {key!r} in {name}",
                                 closest(str(key), known))
        return value

    def integer(self, where: tuple, *, default: int | None, minimum: int | None) -> int | None:
        value = self.get(where)
        if value is None:
            return default
        name = ".".join(map(str, where))
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"{name}: {value!r} is not a whole number")
        if minimum is not None and value < minimum:
            raise self.error(where, f"{name}: {value} is below {minimum}")
        return value

    def number(self, where: tuple, raw: Any) -> float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)  # YAML reads 1e-3 (no dot) as a string: accept it
        except (TypeError, ValueError):
            raise self.error(where, f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise self.error(where, f"{raw!r} is not a finite number")
        return value

    def file(self, where: tuple, what: str, *, value: str | None = None,
             required: bool = False) -> str | None:
        raw = value if value is not None else self.get(where)
        if raw is None:
            if required:
                raise self.error(where[:-1], f"{'.'.join(map(str, where))} is missing",
                                 f"give the path of the {what}")
            return None
        full = os.path.normpath(os.path.join(self.folder, os.path.expanduser(str(raw))))
        if not os.path.isfile(full):
            raise self.error(where, f"{what} {raw} does not exist (looked for {full})",
                             "paths in a sweep spec are relative to the spec's folder")
        return full


def closest(word: str, known, fallback: str | None = None) -> str:
    """A hint naming the known words closest to a misspelt one."""
    close = difflib.get_close_matches(word, list(known), n=3, cutoff=0.6)
    if close:
        return "closest: " + ", ".join(close)
    return fallback or "known: " + ", ".join(known)
