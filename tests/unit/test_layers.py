"""The arrows point one way: farm/ imports neither Celery nor workers/ nor dashboard/."""
from __future__ import annotations

import ast
from pathlib import Path

FARM = Path(__file__).resolve().parents[2] / "farm"
FORBIDDEN = ("celery", "kombu", "billiard", "flower", "workers", "dashboard")


def test_farm_never_imports_celery_or_the_layers_above_it():
    offenders = []
    for path in FARM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(FARM.rglob("*.py"))) > 10  # the walk did see the package
