"""GPU idle gap between sweep trials, and the sweep's scheduling overhead, in one run.

One `gpu` queue worker (concurrency 1; a CPU stand-in for a GPU: this machine has none),
a `cpu` worker for the controller's ticks, and beat (or, until `farm.sweep.tick_all` is
on beat's schedule, a thread that sends it every `--tick` seconds, as beat would).

1. GPU idle gap: a sweep of `--trials` micro trials (`--iterations` each, concurrency 1);
   for each trial after the first, the time from the previous trial's darknet exit (its
   last attempt's `ended_at`, set when the farm saw darknet end) to this trial's darknet
   start (its first attempt's `started_at`, set just before the spawn). Goal: median
   <= 1 s. The next trial is started by `on_run_finished`, which `farm.train` calls at the
   end of a sweep's run; until workers/tasks/train.py calls it, this bench calls it from
   Celery's `task_postrun` signal in the gpu worker (after the task returns: a little
   later than the real hook, so the gap measured is an upper bound). `--no-hook`
   measures beat's ticks alone.
2. Scheduling overhead: the same darknet commands (each trial's cfg, the same data) run
   back to back by hand (`stdbuf -oL -eL darknet detector train ...`, one after another;
   half before the sweep and half after it, so drift hits both) vs the sweep from
   submission to its end; the ratio sweep / by hand.

    python bench/bench_sweep.py [--trials 50] [--iterations 20] [--tick 2] [--no-hook]
    python bench/bench_sweep.py --trials 200

3. A big sweep queued (`--queued 10000`): the wall time of `farm sweep submit` and
   `farm sweep show` (the commands as a person runs them, each in a fresh process, no
   worker up), `--repeat` times; with `--baseline REV`, the same commands of that
   revision side by side in the same run (each on its own Redis database). Goals:
   submit under 2 s, show under 0.5 s.

    python bench/bench_sweep.py --queued 10000 --baseline 2684f74
"""
from __future__ import annotations

import argparse
import inspect
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMULATE_HOOK = "BENCH_SWEEP_EMULATE_HOOK"

if os.environ.get(EMULATE_HOOK) == "1":  # imported by the gpu worker (-I bench.bench_sweep)
    from celery.signals import task_postrun

    @task_postrun.connect
    def _after_train(sender=None, retval=None, **_):
        if getattr(sender, "name", "") != "farm.train" or not isinstance(retval, dict):
            return
        from workers.tasks.sweep import on_run_finished
        from workers.tasks import store
        on_run_finished(store().runs.load(retval["run_id"]))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hook_installed() -> bool:
    import workers.tasks.train as train
    return "on_run_finished" in inspect.getsource(train)


def by_hand(trials, data: Path, workdir: Path) -> tuple[float, list[float]]:
    """The trials' darknet commands one after another, as a shell loop would run them:
    the loop's wall time and each command's."""
    from farm.darknet.objdata import write_obj_data
    from farm.runs import workspace
    from farm.runs.model import Run
    start = time.perf_counter()
    each = []
    for t in trials:
        folder = workdir / f"hand-{t.index}"
        (folder / "backup").mkdir(parents=True)
        run = Run(id="hand", data=str(data), cfg=t.cfg, weights=None, base_dir=str(data.parent),
                  overrides=t.overrides, policy={}, host="bench", created_at=0, max_batches=0)
        workspace.training_cfg(run, {}).save(folder / "net.cfg")
        write_obj_data(folder / "obj.data", {"classes": "1",
                                             "train": str(data.parent / "train.txt"),
                                             "valid": str(data.parent / "valid.txt"),
                                             "backup": str(folder / "backup")})
        spawned = time.perf_counter()
        proc = subprocess.Popen(["stdbuf", "-oL", "-eL", shutil.which("darknet"), "detector",
                                 "train", "obj.data", "net.cfg"], cwd=folder,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in proc.stdout:
            pass
        proc.wait()
        each.append(time.perf_counter() - spawned)
    return time.perf_counter() - start, each


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--tick", type=float, default=2.0, help="beat interval of tick_all (s)")
    ap.add_argument("--no-hook", action="store_true",
                    help="start trials from beat's ticks only (no on_run_finished)")
    ap.add_argument("--queued", type=int, metavar="N",
                    help="time submit and show of a sweep of N trials instead")
    ap.add_argument("--baseline", metavar="REV", help="with --queued: also time REV's")
    ap.add_argument("--repeat", type=int, default=5, help="with --queued: runs of each")
    args = ap.parse_args()
    if args.queued:
        return queued(args)
    if not shutil.which("darknet") or not shutil.which("redis-server"):
        raise SystemExit("needs darknet and redis-server (bash ops/setup.sh installs them)")

    from workers.micro import micro_cfg, micro_dataset
    from farm.settings import Settings
    from farm.store import Store
    from farm.sweeps.model import SweepState
    from farm.sweeps.service import advance, submit_sweep
    from farm.sweeps.spec import load_spec

    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-sweep-"))
    port = free_port()
    procs = [subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                              stdout=subprocess.DEVNULL)]
    s = Settings(data_dir=str(tmp / "farm"), redis_url=f"redis://127.0.0.1:{port}/0",
                 host_name="bench").validate()
    os.environ.update(s.to_env())  # before workers.app is imported: it reads FARM_*
    real_hook = hook_installed()
    emulate = not real_hook and not args.no_hook
    env = {**os.environ, **s.to_env(), "PYTHONPATH": str(REPO),
           EMULATE_HOOK: "1" if emulate else "0"}
    if args.no_hook and real_hook:
        raise SystemExit("--no-hook: workers/tasks/train.py calls on_run_finished itself")

    def worker(name: str, queue: str, *extra: str) -> None:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n",
             f"{name}@bench", "-Q", queue, "-c", "1", "--disable-prefetch",
             "--prefetch-multiplier=1", "-l", "WARNING", *extra],
            env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    stop = threading.Event()
    try:
        time.sleep(0.5)
        from workers.app import app
        from workers.tasks.enqueue import enqueue_train
        worker("gpu", "gpu", *(["-I", "bench.bench_sweep"] if emulate else []))
        worker("cpu", "cpu", "-I", "workers.tasks.sweep")
        real_beat = any(e["task"] == "farm.sweep.tick_all"
                        for e in app.conf.beat_schedule.values())
        if real_beat:
            procs.append(subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app",
                                           "beat", "-s", str(tmp / "beat"), "-l", "WARNING"],
                                          env=env, cwd=REPO, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        else:
            def ticker():
                while not stop.wait(args.tick):
                    app.send_task("farm.sweep.tick_all", queue="cpu", expires=args.tick)
            threading.Thread(target=ticker, daemon=True).start()
        _wait_workers(app, 2)

        data = micro_dataset(tmp / "ds", images=16)
        micro_cfg(tmp / "micro.cfg", max_batches=args.iterations)
        (tmp / "sweep.yaml").write_text(
            "base: {data: ds/obj.data, cfg: micro.cfg}\n"
            "parameters: {learning_rate: {log_uniform: [0.0005, 0.005]}}\n"
            f"trials: {args.trials}\nseed: 1\nconcurrency: 1\n"
            f"budget: {{iterations: {args.iterations}}}\nobjective: min_avg_loss\n")
        spec = load_spec(tmp / "sweep.yaml")
        store = Store(s.effective_redis_url)

        from farm.sweeps.controller import plan
        planned = plan(spec)
        half = len(planned) // 2  # by hand: half before the sweep, half after (drift)
        hand, hand_each = by_hand(planned[:half], data, tmp)

        started = time.perf_counter()
        sweep = submit_sweep(store, s, spec, gpu_workers=1)
        advance(store, s, sweep.id, enqueue=enqueue_train, early_stop=False)
        sweeps = store.sweeps
        while sweeps.load(sweep.id).state is SweepState.RUNNING:
            time.sleep(0.05)
        swept = time.perf_counter() - started
        rest, rest_each = by_hand(planned[half:], data, tmp)
        hand, hand_each = hand + rest, hand_each + rest_each

        runs = sorted((store.runs.load(t.run_id) for t in sweeps.trials(sweep.id)),
                      key=lambda r: r.attempts[0].started_at)
        bad = [r.id for r in runs if r.state.value != "completed"]
        gaps = [b.attempts[0].started_at - a.attempts[-1].ended_at
                for a, b in zip(runs, runs[1:])]
        gaps.sort()
        how = ("on_run_finished, called by farm.train" if real_hook else
               "on_run_finished from task_postrun (emulating the farm.train hook)" if emulate
               else f"beat's tick_all every {args.tick:g} s only")
        print(f"sweep {sweep.id}: {args.trials} trials x {args.iterations} iterations, "
              f"one gpu worker; next trial started by {how}; ticks: "
              + ("celery beat (workers/app.py schedule)" if real_beat else
                 f"a thread sending tick_all every {args.tick:g} s (beat's stand-in)"))
        if bad:
            print(f"  WARNING: {len(bad)} trial(s) did not complete: {bad[:5]}")
        print(f"GPU idle gap (darknet exit -> next darknet start), {len(gaps)} gaps: "
              f"median {statistics.median(gaps) * 1000:.0f} ms, "
              f"p90 {gaps[int(0.9 * (len(gaps) - 1))] * 1000:.0f} ms, "
              f"max {gaps[-1] * 1000:.0f} ms  (goal: median <= 1000 ms)")
        print(f"scheduling overhead: by hand {hand:.1f} s, sweep {swept:.1f} s "
              f"(submit -> done); ratio sweep/by hand {swept / hand:.3f}; "
              f"{(swept - hand) / args.trials * 1000:.0f} ms per trial")
        in_runs = [a.ended_at - a.started_at for r in runs for a in r.attempts]
        first = runs[0].attempts[0].started_at - sweep.created_at
        print(f"  where the sweep's time went: darknet under the farm {sum(in_runs):.1f} s "
              f"(median {statistics.median(in_runs) * 1000:.0f} ms per trial, by hand "
              f"{statistics.median(hand_each) * 1000:.0f} ms), between trials "
              f"{sum(gaps):.1f} s, submit -> first darknet {first * 1000:.0f} ms")
    finally:
        stop.set()
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is not procs[0] \
                        else proc.terminate()
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def queued(args) -> int:
    """Submit and show of a sweep of `args.queued` trials, this revision and a baseline."""
    from bench.baseline import env_for, export, farm_cmd
    from bench.bench_board import start_redis
    from workers.micro import micro_cfg, micro_dataset
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server (bash ops/setup.sh installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-queued-"))
    redis, url = start_redis(tmp)
    port = url.rsplit(":", 1)[1].split("/")[0]
    try:
        micro_dataset(tmp / "ds", images=8)
        micro_cfg(tmp / "micro.cfg", max_batches=100)
        (tmp / "sweep.yaml").write_text(
            "name: queued\nbase: {data: ds/obj.data, cfg: micro.cfg}\n"
            "parameters: {learning_rate: {log_uniform: [0.0005, 0.005]}}\n"
            f"trials: {args.queued}\nseed: 1\nconcurrency: 4\n"
            "budget: {iterations: 100}\nobjective: min_avg_loss\n")
        trees = [("now", REPO)]
        if args.baseline:
            trees.insert(0, (args.baseline, export(args.baseline, tmp)))
        figures: dict[str, dict[str, list[float]]] = {}
        for db, (name, tree) in enumerate(trees):
            env = env_for(tree, {"FARM_REDIS_URL": f"redis://127.0.0.1:{port}/{db}",
                                 "FARM_DATA_DIR": str(tmp / f"data-{db}")})
            submit, show = [], []
            sweep_id = None
            for _ in range(args.repeat):
                seconds, out = _timed(farm_cmd("sweep", "submit", str(tmp / "sweep.yaml")),
                                      env, tree)
                submit.append(seconds)
                sweep_id = sweep_id or out.strip().splitlines()[-1]
            for _ in range(args.repeat):
                show.append(_timed(farm_cmd("sweep", "show", sweep_id), env, tree)[0])
            figures[name] = {"farm sweep submit": submit, "farm sweep show": show}
        print(f"a sweep of {args.queued} trials, concurrency 4, no worker up; median of "
              f"{args.repeat} runs, each command in a fresh process (load "
              f"{os.getloadavg()[0]:.1f})")
        goals = {"farm sweep submit": 2.0, "farm sweep show": 0.5}
        head = f"{'command':<20}" + "".join(f"{name:>14}" for name, _ in trees)
        print(head + ("   ratio" if args.baseline else "") + "   goal")
        for what, goal in goals.items():
            medians = [statistics.median(figures[name][what]) for name, _ in trees]
            ratio = f"{medians[-1] / medians[0]:>8.3f}" if args.baseline else ""
            print(f"{what:<20}" + "".join(f"{m:>12.2f} s" for m in medians) + ratio
                  + f"   < {goal:g} s {'ok' if medians[-1] < goal else 'OVER'}")
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:])} (in {cwd}) failed: {done.stderr.strip()}")
    return seconds, done.stdout


def _wait_workers(app, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= n:
            return
    raise SystemExit("the workers did not answer within 60 s")


if __name__ == "__main__":
    sys.exit(main())
