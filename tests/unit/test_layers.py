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


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_the_task_modules_import_each_other_in_one_direction_only():
    """No cycle among workers/tasks (lazy imports count): a task reaches another by
    sending it by name (workers/tasks/enqueue.py), not by importing its module."""
    tasks = {_module(p): p for p in (ROOT / "workers" / "tasks").glob("*.py")}
    edges = {name: set() for name in tasks}
    for name, path in tasks.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                edges[name] |= {m for m in found & tasks.keys() if m != name}
    assert edges["workers.tasks.sweep"] and edges["workers.tasks.train"]  # the walk saw them
    state = {name: "new" for name in tasks}

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for nxt in sorted(edges[name]):
            if state[nxt] == "open":
                return path + [name, nxt]
            if state[nxt] == "new" and (found := cycle_from(nxt, path + [name])):
                return found
        state[name] = "done"
        return None
    cycles = [c for name in sorted(tasks) if state[name] == "new"
              and (c := cycle_from(name, []))]
    assert cycles == []


def _state_writes(path: Path) -> list[str]:
    """Lines that set a run's state: `<run>.state = ...` or `state=RunState...` given to
    a constructor or to dataclasses.replace."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        pairs = []
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs += zip(target.elts, node.value.elts)
                else:
                    pairs.append((target, node.value))
        for target, value in pairs:
            if isinstance(target, ast.Attribute) and target.attr == "state" and (
                    "RunState" in ast.unparse(value) or "run" in ast.unparse(target.value)):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if isinstance(node, ast.Call):
            out += [f"{path.relative_to(ROOT)}:{node.lineno}" for k in node.keywords
                    if k.arg == "state" and "RunState" in ast.unparse(k.value)]
    return out


def test_a_runs_state_changes_in_farm_runs_life_only():
    writes = [w for layer in ("farm", "workers", "dashboard")
              for path in (ROOT / layer).rglob("*.py") for w in _state_writes(path)]
    assert writes and all(w.startswith("farm/runs/life.py:") for w in writes), writes
