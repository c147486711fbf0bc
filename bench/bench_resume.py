"""Worker loss to training again, on the embedded farm (`farm up`), kill -9 by kill -9.

One long run of the micro network trains on `farm up`'s gpu worker. `--kills` times each,
the bench kills with SIGKILL (1) the worker's pool process (the one running the task:
its darknet dies with it) and (2) the worker's main process (`farm up` restarts it).
For each kill it measures, from the kill:

- respawn: a new darknet process for the run is running;
- training: the new attempt recorded its first iteration (what the goal counts);

and the iterations lost (the newest iteration before the kill minus the one the new
attempt resumed from: at most one checkpoint interval). A thread counts the run's darknet
processes every 20 ms: two at once would be a duplicate (there must be none).

`farm up` runs with restart_window 5 s, so that each of the back-to-back main-process
kills meets the first restart backoff (`restart_backoff`, 0.5 s) as a single death in a
night would, instead of the doubling a crash loop gets.

`--beat-elsewhere` freezes beat (SIGSTOP) once the farm is up: as on the user's trainer,
whose beat runs on the head, only the workers of the host itself reap (workers/reaping.py).

    python bench/bench_resume.py [--kills 20] [--beat-elsewhere]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.settings import load  # noqa: E402
from farm.store import Store  # noqa: E402
from tests.conftest import darknet_procs_of, free_port, wait_for  # noqa: E402
from workers.micro import micro_cfg, micro_dataset  # noqa: E402


def darknets(run_dir: Path) -> list[int]:
    return [p.pid for p in darknet_procs_of(run_dir)]


class Watch(threading.Thread):
    """Every 20 ms: the run's darknet pids, when each was first seen, the most at once."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.first_seen: dict[int, float] = {}
        self.most = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = darknets(self.run_dir)
            now = time.time()
            for pid in pids:
                self.first_seen.setdefault(pid, now)
            self.most = max(self.most, len(pids))
            time.sleep(0.02)


def wait(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, 0.02, what=what)


def farm_cmd(env: dict, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"farm {' '.join(args)}: {r.stderr}")
    return r.stdout


def worker_pids(data_dir: Path) -> tuple[int, int]:
    record = json.loads((data_dir / "farm-up.pid").read_text())
    main = record["children"]["worker-gpu"]["pid"]
    pool = wait(lambda: next(iter(psutil.Process(main).children()), None), 30, "a pool process")
    return main, pool.pid


def one_kill(kind: str, store: Store, run_id: str, data_dir: Path, watch: Watch) -> dict:
    run = wait(lambda: (r := store.runs.load(run_id)).current and r, 120, "a first attempt")
    number = run.current.number
    # training (this attempt recorded an iteration), then a random moment
    wait(lambda: store.progress.live(run_id).get("attempt") == str(number), 120, "the attempt to train")
    time.sleep(random.uniform(1.0, 4.0))
    main, pool = worker_pids(data_dir)
    last_it = int(store.progress.live(run_id).get("iteration", 0))
    killed = time.time()
    os.kill(pool if kind == "pool" else main, signal.SIGKILL)

    def trained():
        r = store.runs.load(run_id)
        if r.current.number <= number:
            return None
        entries = store.progress.metrics(run_id, start=f"{int(killed * 1000)}-0")
        first = [float(m["t"]) for _, m in entries if m["a"] == str(r.current.number)]
        return (r, min(first)) if first else None
    resumed, first_iteration = wait(trained, 120, "training again")
    new = [t for pid, t in watch.first_seen.items() if t > killed]
    return {"kind": kind, "training_s": first_iteration - killed,
            "respawn_s": (min(new) - killed) if new else float("nan"),
            "lost_iterations": max(0, last_it - resumed.current.start_iteration),
            "resumed_from": resumed.current.start_iteration}


def summary(rows: list[dict], key: str) -> str:
    values = sorted(r[key] for r in rows)
    return f"median {statistics.median(values):5.2f} s  max {max(values):5.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills of each kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beat-elsewhere", action="store_true",
                    help="freeze beat: only the host's own workers reap")
    args = ap.parse_args()
    random.seed(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))  # stop the farm on the way out
    tmp = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    data_dir = tmp / "farm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(FARM_DATA_DIR=str(data_dir), FARM_REDIS_PORT=str(free_port()),
               FARM_FLOWER_PORT=str(free_port()), FARM_BOARD_PORT=str(free_port()),
               FARM_HOST_NAME="bench", FARM_RESTART_WINDOW="5", FARM_RESTART_LIMIT="5",
               PYTHONPATH=str(REPO))
    up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--no-flower"], env=env,
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait(lambda: "workers ready" in (up.stdout.readline() or "") or up.poll() is not None,
             120, "farm up")
        if up.poll() is not None:
            raise SystemExit("farm up failed to start")
        threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
        store = Store(load(env=env).effective_redis_url)
        if args.beat_elsewhere:
            beat = json.loads((data_dir / "farm-up.pid").read_text())["children"]["beat"]
            os.kill(beat["pid"], signal.SIGSTOP)
            print(f"beat (pid {beat['pid']}) frozen: only the workers reap", flush=True)
        data = micro_dataset(tmp / "ds", images=16)
        cfg = micro_cfg(tmp / "micro.cfg", max_batches=1_000_000)
        # every kill costs the run a `lost` attempt: allow more than the policy's 10
        run_id = farm_cmd(env, "train", str(data), str(cfg), "--policy",
                          f"lost_restarts={4 * args.kills}").strip()
        watch = Watch(data_dir / "runs" / run_id)
        watch.start()
        rows = []
        for kind in ("pool", "main"):
            for n in range(args.kills):
                row = one_kill(kind, store, run_id, data_dir, watch)
                rows.append(row)
                print(f"{kind:4s} kill {n + 1:2d}: training again after {row['training_s']:5.2f} s "
                      f"(darknet respawned after {row['respawn_s']:5.2f} s), "
                      f"{row['lost_iterations']} iterations lost", flush=True)
        watch.done.set()
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (2 cores, shared machine)")
        for kind, label in (("pool", "pool process"), ("main", "main process")):
            mine = [r for r in rows if r["kind"] == kind]
            print(f"{label:13s} x{len(mine)}: training again {summary(mine, 'training_s')}; "
                  f"darknet respawned {summary(mine, 'respawn_s')}; "
                  f"iterations lost max {max(r['lost_iterations'] for r in mine)}")
        print(f"all {len(rows)} kills: training again {summary(rows, 'training_s')}")
        print(f"most darknet processes for the run at once: {watch.most} (duplicates: "
              f"{'none' if watch.most <= 1 else 'YES'})")
        return 0 if watch.most <= 1 else 1
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()


if __name__ == "__main__":
    sys.exit(main())
