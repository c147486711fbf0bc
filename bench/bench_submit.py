"""What do the checks before queueing cost? `farm train` wall time with and without them.

    python bench/bench_submit.py [-n 10000] [--repeat 5]

Makes a dataset of N images (tiny JPEGs, one to three boxes each, as bench_lint.py
does; 80 % train, 20 % valid), the micro cfg and a complete start weights file, starts a
redis-server, and runs `farm train DATA CFG WEIGHTS` as a person does (a new process
each time: imports, settings, Redis, the Celery message), alternately with the checks
(dataset lint, cfg rules, memory estimate, start weights, dialect) and with them
replaced by a no-op. Prints the medians, their difference and ratio, and what each
check costs in-process. Goal: `farm train` under 2 s on a 10 000-image dataset.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_lint import make_dataset  # noqa: E402
from bench_overhead import free_port  # noqa: E402
from farm.darknet.cfg import Cfg, check_cfg  # noqa: E402
from farm.darknet.memory import estimate  # noqa: E402
from farm.darknet.weights import check_weights, layer_weight_counts  # noqa: E402
from farm.datasets.lint import lint_obj_data  # noqa: E402
from farm.runs import checks  # noqa: E402
from farm.settings import Settings  # noqa: E402
from workers.micro import micro_cfg  # noqa: E402

#: `farm train` with farm.runs.checks.check_training replaced by a no-op.
WITHOUT_CHECKS = ("import sys, farm.runs.checks as c; "
                  "c.check_training = lambda **kw: c.Checked('pjreddie'); "
                  "from workers.cli import main; sys.exit(main(sys.argv[1:]))")


def dataset(root: Path, n: int) -> Path:
    """obj.data of N images: bench_lint's images and labels, the list split 80/20."""
    entries = Path(make_dataset(str(root), n, True, "pjreddie")).read_text().split()
    cut = n * 4 // 5
    (root / "train.txt").write_text("\n".join(entries[:cut]) + "\n")
    (root / "valid.txt").write_text("\n".join(entries[cut:]) + "\n")
    (root / "obj.names").write_text("close\n")
    data = root / "obj.data"
    data.write_text(f"classes = 1\ntrain = {root / 'train.txt'}\nvalid = {root / 'valid.txt'}"
                    f"\nnames = {root / 'obj.names'}\n")
    return data


def farm_train(env: dict, argv: list[str], checked: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one `farm train`. The CPU time (user + system of the
    process) is what the machine's load does not inflate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "workers.cli"] if checked else \
        [sys.executable, "-c", WITHOUT_CHECKS]
    done = subprocess.run(cmd + ["train", *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"farm train failed ({done.returncode}):\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def each_check(data: Path, cfg_path: Path, weights: Path, settings: Settings) -> list:
    """(what, seconds) of each check, in this process, the page cache warm."""
    cfg = Cfg.load(cfg_path)
    out = []
    for what, fn in (
            ("dialect (remembered: darknet ran once)",
             lambda: checks.trainer_dialect(settings, cfg)),
            ("cfg rules and values", lambda: check_cfg(cfg, dialect="pjreddie")),
            ("memory estimate", lambda: estimate(cfg, dialect="pjreddie")),
            ("start weights", lambda: check_weights(weights, cfg, for_inference=False)),
            ("dataset lint", lambda: lint_obj_data(data, classes=1, dialect="pjreddie"))):
        start = time.perf_counter()
        fn()
        out.append((what, time.perf_counter() - start))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="images (default 10000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        root = Path(tmp)
        data = dataset(root / "ds", args.n)
        cfg = micro_cfg(root / "micro.cfg", max_batches=6000)
        weights = root / "start.weights"
        floats = sum(layer_weight_counts(Cfg.load(cfg)))
        weights.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 0) + bytes(4 * floats))
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            env = {**os.environ, "FARM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                   "FARM_DATA_DIR": str(root / "farm"), "FARM_HOST_NAME": "bench",
                   "PYTHONPATH": str(REPO)}
            argv = [str(data), str(cfg), str(weights)]
            farm_train(env, argv, True)  # warm the page cache and Python's bytecode
            timings: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(args.repeat):
                for checked in (True, False):
                    timings[checked].append(farm_train(env, argv, checked))
            settings = Settings(data_dir=str(root / "farm"), host_name="bench",
                                redis_url=env["FARM_REDIS_URL"])
            parts = each_check(data, cfg, weights, settings)
        finally:
            redis.terminate()
            redis.wait(10)
    on, off = (statistics.median(w for w, _ in timings[c]) for c in (True, False))
    on_cpu, off_cpu = (statistics.median(c for _, c in timings[k]) for k in (True, False))
    print(f"farm train, {args.n} images ({args.n * 4 // 5} train, {args.n // 5} valid), "
          f"micro cfg, start weights; median of {args.repeat}, alternated; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, runs, wall, cpu in (("with the checks", timings[True], on, on_cpu),
                                   ("without the checks", timings[False], off, off_cpu)):
        print(f"  {label:<19} {wall:6.3f} s wall, {cpu:6.3f} s CPU   (wall of each: "
              f"{', '.join(f'{w:.2f}' for w, _ in runs)})")
    print(f"  the checks cost     {on - off:6.3f} s wall, {on_cpu - off_cpu:6.3f} s CPU; "
          f"ratio {on / off:.2f} (wall); goal: under 2 s with them: "
          f"{'met' if on < 2 else 'NOT met'}")
    print("  each check in-process (warm):")
    for what, seconds in parts:
        print(f"    {what:<44} {seconds:6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
