"""Another revision of the farm, beside this one, for benchmarks that compare the two in
one run (`--baseline REV`): its files are exported (`git archive`) into a folder, and its
commands run there with the same interpreter and packages."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export(rev: str, into: Path) -> Path:
    """The tree of `rev` in `into`/<rev>; SystemExit when git does not know it."""
    try:
        data = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, check=True,
                              capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"--baseline {rev}: {e.stderr.decode().strip()}") from None
    folder = into / f"baseline-{rev.replace('/', '_')}"
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def env_for(tree: Path, settings_env: dict[str, str]) -> dict[str, str]:
    """The environment that runs `python -m workers.cli` / `-m dashboard` from `tree`
    (its own modules first on the path, ahead of the installed checkout)."""
    return {**os.environ, **settings_env, "PYTHONPATH": str(tree)}


def farm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]
