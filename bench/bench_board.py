"""Server time of the farm board's data: a run page with 50 000 iterations of metrics, the
runs list with 500 runs, and the sweep pages with a sweep of 10 000 trials queued (goal:
under 200 ms each).

It starts its own redis-server on a free loopback port, fills it as training would
(a run of three attempts with a restart after nan, checkpoints and evaluations; 499 other
runs), folds the big run's chart once (the board does that in the background while a run
trains; its one-time cost is printed too), then times:
  - the data functions the handlers call (runs_payload, run_payload, chart_payload);
  - the same over HTTP on loopback, with the login, JSON encoding and gzip (end to end);
  - the sweep pages and their API with a sweep of `--sweep-trials` trials queued (four
    submitted, the rest pending), and the bytes each answer sends (uncompressed); with
    `--baseline REV`, that revision's board (a process of its own, its own Redis database,
    the sweep submitted by its own `farm sweep submit`) on the same sweep, side by side.

    python bench/bench_board.py [--iterations 50000] [--runs 500] [--repeat 15] [--serve]
    python bench/bench_board.py --sweep-trials 10000 --baseline 2684f74

--serve keeps the filled board running (prints its URL and password) to look at it.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dashboard.app import make_app  # noqa: E402
from dashboard.board import chart_payload, run_payload, runs_payload  # noqa: E402
from farm.runs.chart import update_chart  # noqa: E402
from farm.eval.evaluation import Evaluation  # noqa: E402
from farm.runs.model import Attempt, Checkpoint, Outcome, Run, RunState  # noqa: E402
from farm.settings import Settings  # noqa: E402
from farm.store import Store  # noqa: E402

GOAL_MS = 200.0
PASSWORD = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            Store(url).ping()
            return proc, url
        except Exception:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def make_run(run_id: str, created: float, iterations: int, attempts: int) -> Run:
    run = Run(id=run_id, data="/data/obj.data", cfg="/data/yolov4-tiny.cfg", weights=None,
              base_dir="/data", overrides={}, policy={}, host="lily2", created_at=created,
              max_batches=iterations, state=RunState.RUNNING, task_id=f"task-{run_id}",
              worker="gpu1@lily2:1")
    per = iterations // attempts
    for n in range(1, attempts + 1):
        start = max((n - 1) * per - 50, 0)
        last = iterations if n == attempts else n * per
        run.attempts.append(Attempt(
            number=n, command=["darknet"], hyper={"learning_rate": str(0.01 / 2 ** (n - 1))},
            start_weights=None, start_iteration=start, host="lily2", workdir="/w",
            log_path="/w/darknet.log", started_at=created + n, reason="first attempt" if n == 1
            else f"diverged at iteration {start + 50}",
            changes={} if n == 1 else {"learning_rate": [str(0.01 / 2 ** (n - 2)),
                                                         str(0.01 / 2 ** (n - 1))]},
            outcome=None if n == attempts else Outcome.DIVERGED, last_iteration=last))
        run.checkpoints += [Checkpoint(it, f"/w/iter-{it}.weights", "/w/net.backup", True, n,
                                       created) for it in range(start + 100, last + 1, 1000)]
    return run


def fill(store: Store, iterations: int, runs: int) -> str:
    """One big run with `iterations` metrics, `runs - 1` small ones; returns the big id."""
    big = "r-big-50k"
    now = time.time()
    run = make_run(big, now, iterations, attempts=3)
    store.runs.save(run)
    pipe = store.db.r.pipeline(transaction=False)
    key = f"farm:run:{big}:metrics"
    for a in run.attempts:
        for i in range(a.start_iteration + 1, a.last_iteration + 1):
            loss = 500 * math.exp(-i / 300) + 0.5 + (i % 7) / 10
            nan = a.number < len(run.attempts) and i == a.last_iteration
            pipe.xadd(key, {"a": a.number, "i": i, "loss": "nan" if nan else repr(loss),
                            "avg": "nan" if nan else repr(loss * 0.98),
                            "rate": a.hyper["learning_rate"], "s": "0.25", "t": f"{now:.3f}"})
            if len(pipe) >= 5000:
                pipe.execute()
    pipe.execute()
    store.db.r.hset(f"farm:run:{big}:live", mapping={"attempt": 3, "iteration": iterations,
                                                     "avg_loss": "0.61", "rate": "0.0025",
                                                     "updated_at": f"{now:.3f}"})
    store.db.r.rpush(f"farm:run:{big}:log",
                     *[f"{i}: 0.6, 0.61 avg, 0.0025 rate" for i in range(2000)])
    store.db.r.set(f"farm:run:{big}:logn", 2000)
    for c in run.checkpoints:
        result = Evaluation(run_id=big, iteration=c.iteration,
                            map=min(0.95, c.iteration / iterations),
                            evaluator="opencv-dnn", precision=0.8, recall=0.7, f1=0.75,
                            tp=70, fp=17, fn=30, avg_iou=0.6, seconds=3.0,
                            classes=({"id": 0, "name": "close", "ap": 0.8},))
        store.evaluations.record(big, result, result.map)
    pipe = store.db.r.pipeline(transaction=False)
    for k in range(runs - 1):
        small = make_run(f"r-{k:04d}", now - 60 * (k + 1), 6000, attempts=1 + k % 3)
        small.state = [RunState.COMPLETED, RunState.FAILED, RunState.RUNNING][k % 3]
        pipe.set(f"farm:run:{small.id}", json.dumps(small.to_dict()))
        pipe.zadd("farm:runs", {small.id: small.created_at})
        pipe.hset(f"farm:run:{small.id}:live", mapping={
            "attempt": 1, "iteration": 6000, "avg_loss": "0.7", "rate": "0.001",
            "updated_at": f"{now:.3f}"})
        pipe.set(f"farm:run:{small.id}:best", json.dumps(
            {"iteration": 6000, "map": 0.9, "score": 0.9}))
    pipe.execute()
    return big


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median, max) milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def get(url: str, html: bool = False) -> bytes:
    auth = "Basic " + base64.b64encode(f"farm:{PASSWORD}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": auth,
                                               "Accept-Encoding": "identity",
                                               **({"Accept": "text/html"} if html else {})})
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--sweep-trials", type=int, default=10_000)
    ap.add_argument("--baseline", metavar="REV", help="also time REV's sweep pages")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-board-"))
    redis, url = start_redis(tmp)
    try:
        store = Store(url)
        start = time.perf_counter()
        big = fill(store, args.iterations, args.runs)
        print(f"filled {args.runs} runs, {args.iterations} iterations of metrics for {big} "
              f"in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        state = update_chart(store.progress, big)
        print(f"one-time fold of {state['n']} metric entries into {len(state['buckets'])} "
              f"buckets: {time.perf_counter() - start:.2f} s (the board does this in the "
              f"background as the run trains)")
        settings = Settings(data_dir=str(tmp), redis_url=url)
        n = f"{args.iterations // 1000}k iterations"
        rows = [(f"runs list, {args.runs} runs", lambda: runs_payload(store)),
                (f"run page, {n}", lambda: run_payload(store, big, settings)),
                (f"run chart, {n}", lambda: chart_payload(store, big))]
        port = free_port()
        threading.Thread(target=_serve, args=(settings, store, port), daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                get(f"{base}/api/runs")
                break
            except OSError:
                time.sleep(0.05)
        rows += [(f"HTTP GET {path}", lambda p=path: get(base + p))
                 for path in ("/api/runs", f"/api/runs/{big}", f"/api/runs/{big}/chart")]
        sweep_rows = sweep_pages(args, tmp, url, settings, store, base) \
            if args.sweep_trials else []
        rows += [(label, fn) for label, fn, _ in sweep_rows if label.startswith("now")]
        print(f"\n{'what':<44} {'median ms':>10} {'max ms':>8}  goal < {GOAL_MS:.0f} ms")
        worst = 0.0
        for label, fn in rows:
            fn()  # warm up
            median, peak = timed(fn, args.repeat)
            worst = max(worst, median)
            print(f"{label:<44} {median:>10.1f} {peak:>8.1f}  "
                  f"{'ok' if median < GOAL_MS else 'OVER'}")
        size = len(get(f"{base}/api/runs/{big}/chart"))
        print(f"\nchart payload: {size / 1024:.0f} KiB for {len(state['buckets'])} buckets")
        if sweep_rows:
            print(f"\nsweep pages, {args.sweep_trials} trials queued (median of "
                  f"{args.repeat}, uncompressed bytes; load {os.getloadavg()[0]:.1f})")
            for label, fn, _ in sweep_rows:
                fn()
                median, _ = timed(fn, args.repeat)
                worst = max(worst, median) if label.startswith("now") else worst
                print(f"{label:<52} {median:>8.1f} ms {len(fn()) / 1024:>9.0f} KiB  "
                      f"{'ok' if median < GOAL_MS else 'OVER'}")
        if args.serve:
            print(f"\nboard: {base}/runs/{big}  login farm / {PASSWORD}  (Ctrl-C stops)")
            threading.Event().wait()
        return 0 if worst < GOAL_MS else 1
    except KeyboardInterrupt:
        return 0
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_pages(args, tmp: Path, url: str, settings: Settings, store: Store, base: str
                ) -> list:
    """(label, fetch, bytes) of each sweep page of this revision, and of the baseline's
    (when asked), each with a sweep of args.sweep_trials trials queued."""
    from farm.sweeps.service import advance, submit_sweep
    from farm.sweeps.spec import load_spec
    from workers.micro import micro_cfg, micro_dataset
    micro_dataset(tmp / "ds", images=8)
    micro_cfg(tmp / "micro.cfg", max_batches=100)
    spec_path = tmp / "sweep.yaml"
    spec_path.write_text(
        "name: queued\nbase: {data: ds/obj.data, cfg: micro.cfg}\n"
        "parameters: {learning_rate: {log_uniform: [0.0005, 0.005]}}\n"
        f"trials: {args.sweep_trials}\nseed: 1\nconcurrency: 4\n"
        "budget: {iterations: 100}\nobjective: min_avg_loss\n")
    sw = submit_sweep(store, settings, load_spec(spec_path))
    advance(store, settings, sw.id, enqueue=lambda run_id, queue: "bench", early_stop=False)
    pages = ["/sweeps", "/api/sweeps", f"/sweeps/{sw.id}", f"/api/sweeps/{sw.id}",
             f"/api/sweeps/{sw.id}?page={-(-args.sweep_trials // 25)}"]
    rows = [(f"now  GET {p.replace(sw.id, '<id>')}", lambda p=p: get(base + p, html=True),
             None) for p in pages]
    if args.baseline:
        rows = _baseline_pages(args, tmp, url, spec_path) + rows
    return rows


def _baseline_pages(args, tmp: Path, url: str, spec_path: Path) -> list:
    """The baseline's board on its own Redis database, its sweep submitted by its CLI."""
    import atexit
    from bench.baseline import env_for, export, farm_cmd
    tree = export(args.baseline, tmp)
    data = tmp / "baseline-data"
    data.mkdir()
    (data / "flower.password").write_text(PASSWORD + "\n")
    port = free_port()
    env = env_for(tree, {"FARM_REDIS_URL": url.rsplit("/", 1)[0] + "/1",
                         "FARM_DATA_DIR": str(data), "FARM_BOARD_PORT": str(port),
                         "FARM_FLOWER_ADDRESS": "127.0.0.1"})
    subprocess.run(farm_cmd("sweep", "submit", str(spec_path)), env=env, cwd=tree,
                   check=True, capture_output=True)
    board = subprocess.Popen([sys.executable, "-m", "dashboard"], env=env, cwd=tree,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(board.terminate)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            get(base + "/api/runs")
            break
        except OSError:
            time.sleep(0.05)
    return [(f"{args.baseline} GET {p}", lambda p=p: get(base + p, html=True), None)
            for p in ("/sweeps", "/api/sweeps")]


def _serve(settings: Settings, store: Store, port: int) -> None:
    import asyncio

    async def run() -> None:
        make_app(settings, store=store, password=PASSWORD).listen(port, "127.0.0.1")
        await asyncio.Event().wait()
    asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
