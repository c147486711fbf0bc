"""Watching runs from the command line, against real workers and Debian's darknet:
`farm train --wait` (a live line on a terminal, plain lines in a pipe, a summary at the
end, and no end before the last evaluation is recorded), `farm runs` and `farm status`
with speed, ETA, evaluations and failure reasons, `farm logs` with attempt markers, and
darknet.log written on disk as darknet prints.

`--wait` runs as a real subprocess (`python -m workers.cli`), its stderr a pipe or a
pseudo-terminal, as a person or a script would run it.
"""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from farm.runs.model import RunState
from farm.store import Store
from tests.conftest import REPO, blank_line_in_train_list, wait_for
from tests.integration.test_eval import farm_cli, start_eval_worker
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def micro(tmp_path):
    return micro_dataset(tmp_path / "ds", images=16), tmp_path


def farm_process(farm, *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], cwd=str(REPO),
                            env=farm.env, stdout=subprocess.PIPE, stderr=stderr, text=True)


class Lines:
    """The lines a stream gives, read by a thread (so a test can wait for one)."""

    def __init__(self, stream):
        self.q: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=lambda: [self.q.put(line) for line in stream],
                                       daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.q.empty():
            self.seen.append(self.q.get())

    def wait(self, pattern: str, timeout: float = 60) -> str:
        def found():
            self._drain()
            return next((s for s in self.seen if re.search(pattern, s)), None)
        return wait_for(found, timeout, 0.1, what=f"a line matching {pattern!r}")

    def all(self) -> str:
        """Everything, once the stream has ended."""
        self.thread.join(30)
        self._drain()
        return "".join(self.seen)


def test_train_wait_ends_after_the_final_evaluation_and_prints_a_summary(
        farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=400)
    farm.worker("gpu1")
    evaluator = start_eval_worker(farm)
    store = Store(farm.settings.effective_redis_url)
    proc = farm_process(farm, "train", str(data), str(cfg), "--eval-every", "100", "--wait")
    err = Lines(proc.stderr)
    run_id = proc.stdout.readline().strip()
    # once the first evaluation is in, the eval worker's pool is paused: the later ones,
    # the final checkpoint's among them, cannot land before the run ends
    wait_for(lambda: store.evaluations.all(run_id), 60, 0.1, what="the first evaluation")
    pool = psutil.Process(evaluator.pid).children()
    assert pool, "a prefork eval worker has a pool child"
    for child in pool:
        child.suspend()
    try:
        wait_for(lambda: store.runs.load(run_id).state.finished, 120, 0.2, what="the run")
        err.wait(r"^waiting for the evaluation of iterations? .*400 \(at most 10m00s\)")
        assert proc.poll() is None, "--wait must not end before the last evaluation"
        assert 400 in store.evaluations.pending(run_id)
    finally:
        for child in pool:
            child.resume()
    out = proc.stdout.read()
    stderr = err.all()
    assert proc.wait(120) == 0, stderr
    evaluations = store.evaluations.all(run_id)
    assert [e.iteration for e in evaluations] == [100, 200, 300, 400]
    assert store.evaluations.pending(run_id) == set()

    best = store.evaluations.best(run_id)
    lines = out.splitlines()
    assert lines[0].startswith(f"{run_id}: completed: final weights at iteration 400")
    assert re.search(rf"^  best: +mAP@0\.50 {best.map * 100:.2f} % \(P [\d.-]+, R [\d.-]+, "
                     rf"F1 [\d.-]+; opencv-dnn\) at iteration {best.iteration}$", out, re.M)
    best_weights = Path(farm.settings.runs_dir) / run_id / "best.weights"
    assert f"  weights:   {best_weights} on testhost" in lines
    assert "  attempts:  1: 1 completed" in lines
    assert re.search(r"^  trained:   400/400 iterations in \d+s$", out, re.M)
    assert best_weights.exists()
    # a pipe: plain lines, no redrawing
    assert "\r" not in stderr
    assert "attempt 1 started: first attempt" in stderr
    assert re.search(r"^iteration \d+/400 \(\d+ %\), ", stderr, re.M)
    for e in evaluations:
        assert f"evaluation of iteration {e.iteration}: mAP@0.50 " in stderr

    # the same run in `farm runs`, `farm status` and its JSON
    code, out, _ = farm_cli(capsys, "runs")
    row = next(line for line in out.splitlines() if line.startswith(run_id))
    assert re.search(rf"completed +400/400 +- +- +[\d.]+ +{best.map * 100:.2f} % "
                     rf"@{best.iteration} +1 ", row), row
    code, out, _ = farm_cli(capsys, "status", run_id)
    assert "  evaluations (mAP@0.50 on the valid list):" in out
    for e in evaluations:
        prf = [f"{v:.2f}" if v is not None else "-"  # no detection: no P
               for v in (e.precision, e.recall, e.f1)]
        assert re.search(rf"^ +{e.iteration} +{e.map * 100:.2f} % +{prf[0]} +{prf[1]} "
                         rf"+{prf[2]}  opencv-dnn", out, re.M), out
    assert re.search(rf"^ +{best.iteration} .*opencv-dnn  <- best$", out, re.M)
    assert f"  best: iteration {best.iteration}, mAP@0.50 {best.map * 100:.2f} %, " \
           f"weights {best_weights} on testhost" in out
    code, out, _ = farm_cli(capsys, "status", run_id, "--json")
    doc = json.loads(out)
    assert [e["iteration"] for e in doc["evaluations"]] == [100, 200, 300, 400]
    assert doc["evaluations"][0]["evaluator"] == "opencv-dnn"
    assert doc["best"]["iteration"] == best.iteration and doc["evaluations_pending"] == []
    assert doc["progress"]["iteration"] == 400 and doc["progress"]["eta_seconds"] == 0.0


def test_train_wait_on_a_terminal_redraws_one_live_line_while_darknet_log_keeps_up(
        farm, micro, capsys, darknet_bin):
    data, tmp = micro
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=500)
    farm.worker("gpu1")  # and no eval worker: its evaluations stay queued
    store = Store(farm.settings.effective_redis_url)
    master, slave = os.openpty()
    proc = farm_process(farm, "train", str(data), str(cfg), "--set", "learning_rate=0.05",
                        "--set", "burn_in=0", "--policy", "burn_in_min=0",
                        # darknet seeds from the clock: now and then 0.00625 spikes too
                        "--policy", "max_divergence_restarts=6", "--wait", stderr=slave)
    os.close(slave)
    screen: list[bytes] = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            screen.append(chunk)
    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    run_id = proc.stdout.readline().strip()

    # while a restarted attempt trains: the file on disk is ahead of what Redis heard
    def restarted_and_training():
        live = store.progress.live(run_id)
        return int(live.get("attempt") or 0) >= 2 and int(live.get("iteration") or 0) >= 30 \
            and live
    live = wait_for(restarted_and_training, 90, 0.05, what="a second attempt training")
    run = store.runs.load(run_id)
    log = Path(run.attempts[int(live["attempt"]) - 1].log_path).read_text()
    on_disk = [int(m) for m in re.findall(r"^\s*(\d+): ", log.replace("\r", "\n"), re.M)]
    assert on_disk and max(on_disk) >= int(live["iteration"]), (max(on_disk or [0]), live)
    assert run.state is RunState.RUNNING
    # `farm runs` meanwhile: its speed and time left
    def listed():
        code, out, _ = farm_cli(capsys, "runs")
        row = next(line for line in out.splitlines() if line.startswith(run_id))
        return re.search(r"running +\d+/500 +[\d.]+ it/s +\d+(s|m\d\ds) ", row) and row
    wait_for(listed, 30, 0.3, what="farm runs to show speed and ETA")

    out, _ = proc.communicate(timeout=180)
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0
    text = b"".join(screen).decode(errors="replace")
    assert "\r\x1b[K" in text  # redrawn in place
    assert re.search(r"iteration \d+/500 \(\d+ %\), [\d.]+ it/s, ETA \w+, avg loss [\d.]+, "
                     r"mAP -, restarts [1-9]", text)
    assert re.search(r"attempt 2 started: attempt 1 diverged at iteration \d+", text)
    assert "no worker listens on eval: the evaluation of iteration" in text
    assert re.search(r"^  attempts:  \d: 1 completed, [1-9] diverged$", out, re.M)
    assert "  best:      no evaluated checkpoint" in out
    assert re.search(r"^  missing:   evaluation of iteration [\d, ]*500 \(not recorded yet\)$",
                     out, re.M)


def test_logs_mark_each_attempt_and_say_when_darknet_never_started(
        farm, micro, capsys, darknet_bin):
    data, tmp = micro
    farm.worker("gpu1")
    cfg = micro_cfg(tmp / "micro.cfg", max_batches=60)
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg), "--set",
                              "learning_rate=0.05", "--set", "burn_in=0", "--policy",
                              "burn_in_min=0", "--policy", "max_divergence_restarts=6",
                              "--wait")
    assert code == 0, err
    run = Store(farm.settings.effective_redis_url).runs.load(out.splitlines()[0])
    assert len(run.attempts) >= 2

    code, out, _ = farm_cli(capsys, "logs", run.id, "-n", "0")
    assert code == 0
    lines = out.splitlines()
    markers = [n for n, line in enumerate(lines) if line.startswith("--- attempt")]
    assert len(markers) == len(run.attempts) and markers[0] == 0
    assert lines[0] == "--- attempt 1 on testhost (first attempt) ---"
    second = run.attempts[1]
    assert lines[markers[1]] == f"--- attempt 2 on testhost ({second.reason}) ---"
    assert "diverged at iteration" in second.reason and "0.05 -> 0.025" in second.reason
    # each attempt's output follows its marker: from iteration 1 (no checkpoint to resume
    # from) to where the farm stopped it or it completed
    for attempt, start, end in zip(run.attempts, markers, markers[1:] + [len(lines)]):
        its = [int(m.group(1)) for line in lines[start + 1:end]
               if (m := re.match(r"\s*(\d+): ", line))]
        assert its[0] == 1 and its[-1] == attempt.last_iteration

    farm.stop()  # no gpu worker until the list is broken: only the worker can refuse it
    code, out, err = farm_cli(capsys, "train", str(data), str(cfg))
    assert code == 0, err
    bad_id = out.strip()
    train_list = blank_line_in_train_list(data)
    farm.worker("gpu1")
    store = Store(farm.settings.effective_redis_url)
    wait_for(lambda: store.runs.load(bad_id).state.finished, 120, 0.2, what="the run to end")
    for follow in ([], ["-f"]):
        code, out, err = farm_cli(capsys, "logs", bad_id, *follow)
        assert code == 1 and out == ""
        assert err.startswith(f"{bad_id}: darknet never started: the run failed before it "
                              f"could: bad input, not retried: ")
        assert f"{train_list}:3" in err and "blank line" in err
    code, out, _ = farm_cli(capsys, "runs")
    row = next(line for line in out.splitlines() if line.startswith(bad_id))
    assert re.search(r"failed .* bad input, not retried: .*train\.txt:3", row), row
