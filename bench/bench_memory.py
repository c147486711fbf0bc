"""How close is the memory estimate (farm.darknet.memory) to what darknet really takes?

    python bench/bench_memory.py [--iterations 2] [--only NAME]

Trains each cfg below with Debian's darknet (pjreddie, CPU) until it has printed
`--iterations` iterations (by then every buffer has been touched: forward, backward,
update, and the next batch loading), kills it, and reads its peak resident memory from
the kernel (wait4's ru_maxrss). Prints the estimate, the measured peak and their ratio.
The cfgs are the micro network at several sizes and batches and upstream tiny cfgs
(../shared/darknet/cfg, random=0, one class) at small sizes, so each takes seconds.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.darknet.cfg import Cfg, make_cfg  # noqa: E402
from farm.darknet.memory import estimate, size_text  # noqa: E402
from workers.micro import micro_cfg, micro_dataset  # noqa: E402

UPSTREAM = REPO.parent / "shared" / "darknet" / "cfg"
ITERATION = re.compile(rb"^\s*(\d+): ", re.M)

#: name -> (base: "micro" or an upstream cfg, width, batch, subdivisions)
CASES = {
    "micro-32-b1": ("micro", 32, 1, 1),
    "micro-64-b4": ("micro", 64, 4, 1),
    "micro-128-b16": ("micro", 128, 16, 1),
    "micro-256-b8/2": ("micro", 256, 8, 2),
    "micro-512-b4": ("micro", 512, 4, 1),
    "micro-1024-b2": ("micro", 1024, 2, 1),
    "yolov3-tiny-96-b4": ("yolov3-tiny", 96, 4, 1),
    "yolov3-tiny-160-b2": ("yolov3-tiny", 160, 2, 1),
    "yolov2-tiny-voc-96-b4/2": ("yolov2-tiny-voc", 96, 4, 2),
    "yolov4-tiny-custom-96-b2": ("yolov4-tiny-custom", 96, 2, 1),  # groups ignored
    "yolov3-tiny-416-b2/2": ("yolov3-tiny", 416, 2, 2),
}


def make(case: str, folder: Path) -> Cfg:
    base, size, batch, subdivisions = CASES[case]
    if base == "micro":
        cfg = Cfg.load(micro_cfg(folder / "net.cfg", max_batches=1000, size=size))
        cfg.set_net("batch", batch)
        cfg.set_net("subdivisions", subdivisions)
    else:
        upstream = Cfg.load(UPSTREAM / f"{base}.cfg")
        cfg = make_cfg(upstream, classes=1, width=size, height=size, batch=batch,
                       subdivisions=subdivisions, max_batches=1000)
        for head in cfg.output_layers():
            head.set("random", 0)
    cfg.save(folder / "net.cfg")
    return cfg


def peak_rss(data: Path, cfg: Path, workdir: Path, iterations: int) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of darknet training until `iterations` lines."""
    start = time.monotonic()
    proc = subprocess.Popen(["stdbuf", "-oL", "-eL", shutil.which("darknet"), "detector",
                             "train", str(data), str(cfg)], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        found = [int(m.group(1)) for m in ITERATION.finditer(seen)]
        if found and max(found) >= iterations:
            proc.send_signal(signal.SIGKILL)
            break
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    if not ITERATION.search(seen):
        raise SystemExit(f"darknet printed no iteration:\n{seen.decode(errors='replace')[-2000:]}")
    return usage.ru_maxrss * 1024, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--only", action="append", help="run only this case (repeatable)")
    args = parser.parse_args()
    if shutil.which("darknet") is None:
        raise SystemExit("darknet is not installed (apt-get install darknet)")
    print(f"{'case':<26} {'estimate':>10} {'measured':>10} {'est/meas':>8} {'time':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        data = micro_dataset(root / "ds", images=16)
        for case in args.only or CASES:
            folder = root / case.replace("/", "_")
            folder.mkdir()
            (folder / "backup").mkdir()
            cfg = make(case, folder)
            est = estimate(cfg, dialect="pjreddie")
            measured, seconds = peak_rss(data, folder / "net.cfg", folder, args.iterations)
            print(f"{case:<26} {size_text(est.host):>10} {size_text(measured):>10} "
                  f"{est.host / measured:>8.3f} {seconds:>5.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
