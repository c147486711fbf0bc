"""`farm demo`, the README's main job, as a person runs it on a fresh data directory."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def test_farm_demo_runs_the_whole_flow_on_the_embedded_farm(tmp_path, darknet_bin):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(FARM_DATA_DIR=str(tmp_path / "farm"), FARM_REDIS_PORT=str(free_port()),
               FARM_FLOWER_PORT=str(free_port()), FARM_BOARD_PORT=str(free_port()),
               PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "workers.cli", "demo"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    demo = tmp_path / "farm" / "demo"
    assert (demo / "contact_sheet.png").stat().st_size > 1000
    # the leaderboard: three trials, the hot one restarted after nan/inf, all ranked by mAP
    board = out[out.index("RANK TRIAL"):]
    rows = [line for line in board.splitlines()[1:4]]
    assert len(rows) == 3 and all("completed" in row and "%" in row for row in rows)
    hot = next(row for row in rows if "learning_rate=0.05" in row)
    assert "nan" in hot  # its restarts count in the leaderboard
    # and it says what its weights were really trained with, not only what was asked
    assert "[trained: learning_rate 0.05 -> 0.025" in hot or \
        "[trained: learning_rate 0.05 -> 0.0125" in hot, hot
    result = json.loads((demo / "best" / "result.json").read_text())
    assert (demo / "best" / "best.weights").exists() and (demo / "best" / "chart.png").exists()
    assert result["trial"] in (0, 1, 2)
    assert "board:  http://127.0.0.1:" in out
    # the embedded farm it started is gone: its Redis no longer answers
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(env["FARM_REDIS_PORT"])), timeout=2)
