"""Throughput of LogParser on a real GPU training log, next to the floor cost.

The floor is what any line-based reader pays anyway: `bytes.splitlines()` and a decode
of every line.  The parser must stay within a small factor of it (goal: >= 50 MB/s) so
that parsing never lags behind a darknet that prints a few MB per minute.

    python bench/bench_parse.py [--repeat N] [--log PATH]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.darknet.logparse import LogParser  # noqa: E402

DEFAULT_LOG = REPO.parent / "shared" / "darknet" / "logs" / "alexeyab-gpu-h100-train-map.log"
CHUNK = 64 * 1024
GOAL_MBPS = 50.0


def best_seconds(fns, repeat: int) -> list[float]:
    """Best time of each function, runs interleaved so both see the same machine load;
    the garbage collector is off while timing, as in timeit."""
    best = [float("inf")] * len(fns)
    gc.disable()
    try:
        for _ in range(repeat):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def run_parser(chunks: list[bytes]) -> list:
    parser = LogParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def run_floor(data: bytes) -> None:
    for line in data.splitlines():
        line.decode("utf-8", "replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="runs per measurement (best is kept)")
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG)
    args = ap.parse_args()
    if not args.log.is_file():
        print(f"bench_parse: log not found: {args.log}", file=sys.stderr)
        return 2
    data = args.log.read_bytes()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    mb = len(data) / 1e6

    parser_s, floor_s = best_seconds([lambda: run_parser(chunks), lambda: run_floor(data)],
                                     args.repeat)
    parser_mbps, floor_mbps = mb / parser_s, mb / floor_s
    lines, events = data.count(b"\n"), len(run_parser(chunks))
    print(f"log: {args.log.name} ({len(data)} bytes, {lines} lines, {events} events), "
          f"{CHUNK // 1024} KiB chunks, best of {args.repeat}")
    print(f"LogParser:                   {parser_mbps:8.1f} MB/s  ({parser_s * 1e3:.2f} ms)")
    print(f"floor (splitlines + decode): {floor_mbps:8.1f} MB/s  ({floor_s * 1e3:.2f} ms)")
    print(f"ratio parser/floor: {parser_mbps / floor_mbps:.2f} "
          f"(parser takes {parser_s / floor_s:.1f}x the floor's time); "
          f"goal {GOAL_MBPS:.0f} MB/s: {'met' if parser_mbps >= GOAL_MBPS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
