"""Disk used by a sweep with and without the retention policy, side by side in one run.

Two farms on one redis-server (databases 1 and 2), each with its own data dir and its own
gpu (a CPU stand-in: this machine has no GPU), cpu and eval workers and beat, run the same
sweep spec at the same time: `--trials` micro trials of `--iterations` each, evaluated
every `--eval-every` iterations. One farm has retention on (the default), the other
`FARM_RETENTION=0` (darknet's files stay where it wrote them: the farm before
retention). A sampler reads the size of each farm's runs/ folder every half second.

Printed per farm: the bytes and weights files left in runs/ when the sweep ends, the
peak bytes seen during it, and the same file counts at yolov4's weights size (245.8 MiB,
from ../shared's yolov4.cfg counted by farm.darknet.weights) for scale. Then what
`farm gc` reclaims from the farm without retention.

    python bench/bench_disk.py [--trials 20] [--iterations 500] [--eval-every 100]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.darknet.memory import size_text  # noqa: E402

#: a yolov4.cfg weights file (farm.darknet.weights.expected_weights_bytes, AlexeyAB layout)
YOLOV4_WEIGHTS = 257_717_640


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usage(folder: Path) -> tuple[int, int, int]:
    """(bytes, weights files, their bytes) under `folder`; a hard link's data once."""
    seen, total, weights, weights_bytes = set(), 0, 0, 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            if name.endswith((".weights", ".backup")):
                weights += 1
                weights_bytes += st.st_size
    return total, weights, weights_bytes


class Farm:
    def __init__(self, name: str, root: Path, redis_url: str, retention: int):
        self.name, self.data_dir = name, root / name
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "FARM_DATA_DIR": str(self.data_dir),
                    "FARM_REDIS_URL": redis_url, "FARM_HOST_NAME": f"bench-{name}",
                    "FARM_RETENTION": str(retention)}
        self.procs: list[subprocess.Popen] = []
        self.peak = 0

    def start(self) -> None:
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        for queue in ("gpu", "cpu", "eval"):
            self._spawn(celery + ["worker", "-n", f"{queue}-{self.name}@bench", "-Q", queue,
                                  "-c", "1", "--disable-prefetch", "--prefetch-multiplier=1",
                                  "-l", "WARNING"])
        self._spawn(celery + ["beat", "-s", str(self.data_dir / "beat"), "-l", "WARNING"])

    def _spawn(self, argv: list[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.procs.append(subprocess.Popen(argv, env=self.env, cwd=REPO, start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def farm(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "workers.cli", *args], env=self.env,
                              cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"farm {' '.join(args)} ({self.name}): {done.stderr}")
        return done.stdout

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=100)
    args = ap.parse_args()
    if not shutil.which("darknet") or not shutil.which("redis-server"):
        raise SystemExit("needs darknet and redis-server (bash ops/setup.sh installs them)")
    from workers.micro import micro_cfg, micro_dataset
    from farm.store import Store
    from farm.sweeps.model import SweepState

    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-disk-"))
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                             stdout=subprocess.DEVNULL)
    farms = [Farm("retention", tmp, f"redis://127.0.0.1:{port}/1", 1),
             Farm("none", tmp, f"redis://127.0.0.1:{port}/2", 0)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            for f in farms:
                f.peak = max(f.peak, usage(f.data_dir / "runs")[0])
    try:
        micro_dataset(tmp / "ds", images=16)
        micro_cfg(tmp / "micro.cfg", max_batches=args.iterations)
        (tmp / "sweep.yaml").write_text(
            f"base: {{data: {tmp}/ds/obj.data, cfg: {tmp}/micro.cfg}}\n"
            "parameters: {learning_rate: {log_uniform: [0.0005, 0.005]}}\n"
            f"trials: {args.trials}\nseed: 1\nconcurrency: 1\n"
            f"budget: {{iterations: {args.iterations}}}\nobjective: min_avg_loss\n"
            f"eval_every: {args.eval_every}\n")
        for f in farms:
            f.start()
        threading.Thread(target=sample, daemon=True).start()
        started = time.monotonic()
        ids = {f.name: f.farm("sweep", "submit", str(tmp / "sweep.yaml")).split()[-1]
               for f in farms}
        for f in farms:
            sweeps = Store(f.env["FARM_REDIS_URL"]).sweeps
            while sweeps.load(ids[f.name]).state is SweepState.RUNNING:
                time.sleep(1)
        took = time.monotonic() - started
        stop.set()
        print(f"{args.trials} trials x {args.iterations} iterations of the micro net "
              f"(27 KB weights), evaluated every {args.eval_every}; both farms side by side, "
              f"{took:.0f} s")
        for f in farms:
            store = Store(f.env["FARM_REDIS_URL"])
            runs = [store.runs.load(t.run_id) for t in store.sweeps.trials(ids[f.name])
                    if t.run_id]
            done = sum(r.state.value == "completed" for r in runs)
            size, files, wbytes = usage(f.data_dir / "runs")
            print(f"  {f.name:<9}: runs/ {size} bytes ({size_text(size)}; peak "
                  f"{size_text(f.peak)}), of which {files} weights files, {wbytes} bytes; "
                  f"{done}/{len(runs)} trials completed; "
                  f"at yolov4's size: {size_text(files * YOLOV4_WEIGHTS)}")
        dry = farms[1].farm("gc", "--dry-run").strip().splitlines()[-1]
        print(f"  farm gc on the farm without retention: {dry}")
        done = farms[1].farm("gc").strip().splitlines()[-1]
        size, files, wbytes = usage(farms[1].data_dir / "runs")
        print(f"  {done}; runs/ now {size} bytes, {files} weights files, {wbytes} bytes")
    finally:
        stop.set()
        for f in farms:
            f.stop()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
