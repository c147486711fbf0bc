"""Packaging throughput and memory: is memory flat in the number of images?

Usage: python bench/bench_package.py [--n 20000] [--small 0] [--no-lint-images]

Makes a source of N small labelled JPEGs (one image's bytes repeated under N names with
varied labels: synthesis speed is measured by bench_synth.py, not here), packages it,
and prints time, images/s, peak Python heap (tracemalloc) and the process's peak RSS
(ru_maxrss, measured in a fresh child process per run). It does this at two sizes,
N/5 and N by default, so that a flat memory curve shows as two similar peaks; and each
size twice, with the dataset lint and without it, to tell their memory apart.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_source(folder: Path, n: int) -> None:
    import cv2
    import numpy as np
    from farm.datasets.synth import SynthSpec
    from farm.datasets.synth.render import render
    img, _ = render(SynthSpec(), 0, 1)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "obj.names").write_text("close\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = f"{i // 1000:03d}"
        if i % 1000 == 0:
            (folder / "images" / sub).mkdir()
            (folder / "labels" / sub).mkdir()
        (folder / "images" / sub / f"{i:06d}.jpg").write_bytes(jpg)
        x, y, s = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.1)
        (folder / "labels" / sub / f"{i:06d}.txt").write_text(
            f"0 {x:.6f} {y:.6f} {s:.6f} {s:.6f}\n")


def measure(source: Path, root: Path, lint_images: bool, lint: bool) -> dict:
    """Runs in a fresh process so that ru_maxrss belongs to this size alone."""
    from farm.datasets.package import build, package
    if not lint:  # separates the packager's own memory from the lint's
        build._lint = lambda *args, **kwargs: []
    tracemalloc.start()
    t0 = time.perf_counter()
    result = package([source], root, check_images=lint_images)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    return {"images": result.images, "seconds": seconds, "tracemalloc_peak_mb": peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "warnings": len(result.warnings)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=0, help="first size (default n/5)")
    ap.add_argument("--no-lint-images", action="store_true",
                    help="skip the lint's image byte checks")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), Path(args.child[1]),
                                 args.child[2] == "1", args.child[3] == "1")))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        for n in (args.small or max(1, args.n // 5), args.n):
            source = work / f"src{n}"
            t0 = time.perf_counter()
            make_source(source, n)
            made = time.perf_counter() - t0
            for lint in ("1", "0"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(source), str(work / f"ds{lint}"),
                     "0" if args.no_lint_images else "1", lint],
                    check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                what = "package + lint" if lint == "1" else "package, lint skipped"
                print(f"{n:>7} images, {what:22}: {r['seconds']:6.1f} s "
                      f"({n / r['seconds']:5.0f} images/s), tracemalloc peak "
                      f"{r['tracemalloc_peak_mb']:6.2f} MB, ru_maxrss {r['maxrss_mb']:6.1f} MB")
            print(f"{'':>7} (source of {n} images written in {made:.1f} s)")
            shutil.rmtree(source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
