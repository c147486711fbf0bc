"""The arrows point one way: farm/ imports neither Celery nor workers/ nor dashboard/;
each outside system sits behind one small module (Redis, SSH)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FARM = ROOT / "farm"
FORBIDDEN = ("celery", "kombu", "billiard", "flower", "workers", "dashboard")
#: package -> the one module of the project (farm/, workers/, dashboard/) that imports it
ADAPTERS = {"redis": "farm/store/redis.py", "paramiko": "farm/remote/ssh.py"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.lineno, (node.module or "").split(".")[0]))
    return out


def test_farm_never_imports_celery_or_the_layers_above_it():
    offenders = [f"{path}:{line} imports {name}" for path in FARM.rglob("*.py")
                 for line, name in imports(path) if name in FORBIDDEN]
    assert offenders == []
    assert len(list(FARM.rglob("*.py"))) > 10  # the walk did see the package


def test_redis_and_paramiko_each_have_one_adapter_module():
    seen: dict[str, set[str]] = {name: set() for name in ADAPTERS}
    for layer in ("farm", "workers", "dashboard"):
        for path in (ROOT / layer).rglob("*.py"):
            for _, name in imports(path):
                if name in seen:
                    seen[name].add(str(path.relative_to(ROOT)))
    assert seen == {name: {module} for name, module in ADAPTERS.items()}
