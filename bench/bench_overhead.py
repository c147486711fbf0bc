"""Farm overhead and divergence reaction, measured side by side in one run.

1. Overhead: the same darknet command (micro cfg, same data) run bare (`stdbuf -oL -eL
   darknet detector train …`, output read and discarded) and as a farm run through a real
   redis-server and a real Celery gpu worker; iterations per second of each (darknet's
   wall time from spawn to exit), alternated `--repeat` times; ratio farm / bare of the
   medians (goal ≥ 0.98).
2. Divergence reaction: runs with learning_rate=0.05 burn_in=0 diverge within ten
   iterations; from the moment the farm read the first non-finite line to the moment the
   replacement darknet was spawned (goal: median ≤ 2 s).

    python bench/bench_overhead.py [--iterations 2000] [--repeat 3] [--diverging 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.runs.model import RunState  # noqa: E402
from farm.runs.service import submit_run  # noqa: E402
from farm.settings import Settings  # noqa: E402
from farm.store import Store  # noqa: E402
from workers.micro import micro_cfg, micro_dataset  # noqa: E402


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare(data: Path, cfg: Path, workdir: Path) -> float:
    workdir.mkdir(parents=True)
    start = time.perf_counter()
    proc = subprocess.Popen(["stdbuf", "-oL", "-eL", shutil.which("darknet"), "detector",
                             "train", str(data), str(cfg)], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in proc.stdout:
        pass
    proc.wait()
    return time.perf_counter() - start


def wait_finished(store: Store, run_id: str, timeout: float = 3600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.runs.load(run_id)
        if run.state.finished:
            return run
        time.sleep(0.1)
    raise SystemExit(f"run {run_id} did not finish in {timeout} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--diverging", type=int, default=5)
    args = ap.parse_args()
    if not shutil.which("darknet") or not shutil.which("redis-server"):
        raise SystemExit("needs darknet and redis-server (bash ops/setup.sh installs them)")

    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    port = free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                  stdout=subprocess.DEVNULL)
    s = Settings(data_dir=str(tmp / "farm"), redis_url=f"redis://127.0.0.1:{port}/0",
                 host_name="bench").validate()
    env = {**os.environ, **s.to_env(), "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                               "-n", "gpu@bench", "-Q", "gpu", "-c", "1", "--disable-prefetch",
                               "--prefetch-multiplier=1", "-l", "WARNING"], env=env, cwd=REPO,
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        os.environ.update(s.to_env())
        from workers.tasks.enqueue import enqueue_train
        store = Store(s.effective_redis_url)
        data = micro_dataset(tmp / "ds", images=16)
        cfg = micro_cfg(tmp / "micro.cfg", max_batches=args.iterations)

        bare_s, farm_s = [], []
        for i in range(args.repeat):
            bare_s.append(bare(data, cfg, tmp / f"bare{i}"))
            run = submit_run(store, s, data=str(data), cfg=str(cfg))
            enqueue_train(run.id)
            run = wait_finished(store, run.id)
            assert run.state is RunState.COMPLETED, run.message
            a = run.attempts[0]
            farm_s.append(a.ended_at - a.started_at)
        b, f = statistics.median(bare_s), statistics.median(farm_s)
        print(f"overhead: {args.iterations} iterations, median of {args.repeat}, alternated")
        print(f"  bare darknet: {args.iterations / b:8.2f} it/s  ({b:.2f} s)  runs {[round(x, 2) for x in bare_s]}")
        print(f"  farm run:     {args.iterations / f:8.2f} it/s  ({f:.2f} s)  runs {[round(x, 2) for x in farm_s]}")
        print(f"  ratio farm/bare: {b / f:.3f}  (goal >= 0.98)")

        reactions = []
        hot = micro_cfg(tmp / "hot.cfg", max_batches=60, learning_rate=0.05, burn_in=0)
        for _ in range(args.diverging):
            run = submit_run(store, s, data=str(data), cfg=str(hot),
                             policy={"burn_in_min": "0"})
            enqueue_train(run.id)
            run = wait_finished(store, run.id)
            if len(run.attempts) < 2:
                print(f"  note: {run.id} did not diverge: "
                      f"{[(a.outcome, a.message) for a in run.attempts]}")
            for before, after in zip(run.attempts, run.attempts[1:]):
                if before.first_bad_at:
                    reactions.append(after.started_at - before.first_bad_at)
        if reactions:
            print(f"divergence reaction: {len(reactions)} restarts, median "
                  f"{statistics.median(reactions) * 1000:.0f} ms, max {max(reactions) * 1000:.0f} ms "
                  f"(first non-finite line read -> replacement darknet spawned; goal median <= 2 s)")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        redis_proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
