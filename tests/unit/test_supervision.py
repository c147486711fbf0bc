"""`farm up`'s supervision of its children, on real short-lived processes: restarts with a
backoff, a crash loop given up with a message quoting its log, the record of what runs,
and leftovers of a killed supervisor stopped."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from farm import procs
from farm.errors import FarmUnavailable
from farm.settings import Settings
from workers.supervision import ChildSpec, Children, claim, read_record


def _children(tmp_path, **settings) -> tuple[Children, list[str]]:
    said: list[str] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    s = Settings(data_dir=str(tmp_path), **settings)
    return Children(s, logs, tmp_path / "farm-up.pid", cwd=str(tmp_path),
                    echo=lambda msg, err=False: said.append(msg)), said


def _tick_until(children: Children, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, [e["message"] for e in children.events]
        children.tick()
        time.sleep(0.02)


def test_a_dead_child_is_restarted_after_a_backoff_that_doubles(tmp_path):
    children, said = _children(tmp_path, restart_backoff=0.2, restart_limit=5)
    try:
        child = children.spawn(ChildSpec("sleeper", ["sleep", "30"]))
        first = child.popen.pid
        child.popen.send_signal(signal.SIGKILL)
        child.popen.wait()
        died_at = time.time()
        _tick_until(children, lambda: child.popen.pid != first)
        assert time.time() - died_at >= 0.2
        assert child.running
        second = child.popen.pid
        child.popen.send_signal(signal.SIGKILL)
        child.popen.wait()
        _tick_until(children, lambda: child.popen.pid != second)
        kinds = [(e["child"], e["event"]) for e in children.events]
        assert kinds == [("sleeper", "died"), ("sleeper", "restarted")] * 2
        assert "killed by SIGKILL" in children.events[0]["message"]
        assert "restarting it in 0.2 s" in children.events[0]["message"]
        assert "restarting it in 0.4 s" in children.events[2]["message"]  # doubled
        assert children.events[0]["code"] == -signal.SIGKILL
        assert said == [f"farm up: {e['message']}" for e in children.events]
        # the record names the child's new process
        record = read_record(tmp_path / "farm-up.pid")
        assert record["children"]["sleeper"]["pid"] == child.popen.pid
    finally:
        children.stop(grace=2)
    assert not (tmp_path / "farm-up.pid").exists()


def test_a_crash_loop_is_given_up_with_a_message_quoting_its_log(tmp_path):
    children, said = _children(tmp_path, restart_backoff=0.01, restart_limit=3,
                               restart_window=60)
    try:
        crasher = children.spawn(ChildSpec("board", [
            sys.executable, "-c", "import sys; print('the board cannot listen on 5556'); sys.exit(3)"]))
        steady = children.spawn(ChildSpec("steady", ["sleep", "30"]))
        _tick_until(children, lambda: crasher.given_up)
        for _ in range(20):  # given up: no more restarts
            children.tick()
            time.sleep(0.01)
        events = [e for e in children.events if e["child"] == "board"]
        assert [e["event"] for e in events] == ["died", "restarted", "died", "restarted",
                                                "gave_up"]
        gave_up = events[-1]["message"]
        assert "exited with 3" in gave_up and "3 deaths within 60 s is a crash loop" in gave_up
        assert "not restarting it" in gave_up and "the board cannot listen on 5556" in gave_up
        assert "restart_limit" in gave_up
        assert any("crash loop" in line for line in said)
        assert steady.running  # the others carry on
    finally:
        children.stop(grace=2)


def test_leftovers_of_a_killed_supervisor_are_found_and_stopped(tmp_path):
    """What a `farm up` killed before its children's parent-death signal could act (or a
    child that ignores it) leaves behind: the next `farm up` or `farm down` stops it."""
    record = tmp_path / "farm-up.pid"
    supervisor = subprocess.Popen(["sleep", "30"])  # stands for the killed `farm up`
    orphan = subprocess.Popen([sys.executable, "-c",
                               "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(60)"],
                              start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline() == "ready\n"
        def pid_of(p):
            return procs.Pid.of(p.pid).to_dict()
        record.write_text(json.dumps({
            "supervisor": pid_of(supervisor),
            "children": {"worker-gpu": {**pid_of(orphan), "stop_signal": int(signal.SIGTERM)}}}))
        with pytest.raises(FarmUnavailable, match="a farm is already up here"):
            claim(record, echo=lambda *a, **k: None)
        supervisor.kill()
        supervisor.wait()
        said = []
        claim(record, echo=lambda msg, err=False: said.append(msg), grace=0.5)
        assert orphan.wait(5) == -signal.SIGKILL  # SIGTERM ignored: SIGKILL after the grace
        assert said == [f"farm up: stopped what a farm killed earlier left running: "
                        f"worker-gpu (pid {orphan.pid})"]
        assert not record.exists()
        claim(record, echo=lambda *a, **k: None)  # nothing recorded: nothing to do
    finally:
        for p in (supervisor, orphan):
            if p.poll() is None:
                p.kill()
                p.wait()
        orphan.stdout.close()
