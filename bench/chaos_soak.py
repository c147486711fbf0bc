"""A chaos soak of the embedded farm: a night of kill -9 in 20 minutes.

`farm up` (two gpu-queue workers, a cpu worker, beat, Flower, the board, Redis) runs a
sweep of `--trials` short trials of the micro network while a loop kills with SIGKILL,
every 10-30 s at random for `--minutes`, one of: a worker's main process, a gpu worker's
pool process, darknet, beat, Redis, Flower or the board. Then it waits for the sweep to
end and reports:

- trials completed exactly once (one run per trial, one completed attempt per run);
- duplicates: a thread counts each run's darknet processes every 20 ms (must stay 0);
- per kill that hit a training: the time to training again and the iterations lost
  (at most one checkpoint interval, 100 iterations for the micro net);
- per kill of another child: the time until `farm up` had it running again;
- the farm still up at the end (every child running, nothing given up), and, after
  `farm down`, no process of the farm left anywhere.

Bounded: the chaos lasts `--minutes`, the sweep gets `--drain` more minutes to finish.
Darknet killed by a signal is a crash, which the trials' policy restarts (crash_restarts
is raised for the soak: one trial may be hit several times).

    python bench/chaos_soak.py [--minutes 20] [--trials 100] [--iterations 300] [--report FILE]
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

from farm.runs.model import Outcome, RunState  # noqa: E402
from farm.settings import load  # noqa: E402
from farm.store import Store  # noqa: E402
from tests.conftest import free_port, wait_for  # noqa: E402
from workers.micro import micro_cfg, micro_dataset  # noqa: E402

KINDS = ("worker main", "pool", "darknet", "beat", "redis", "flower", "board")
TRAINING_KINDS = ("worker main", "pool", "darknet")

SPEC = """\
name: chaos
base:
  data: {data}
  cfg: {cfg}
  set: {{burn_in: 0}}
parameters:
  learning_rate: [{rates}]
concurrency: 2
budget: {{iterations: {iterations}}}
objective: map50
eval_every: {iterations}
policy: {{crash_restarts: 20, lost_restarts: 20}}
"""


def wait(predicate, timeout: float, what: str, interval: float = 0.05):
    return wait_for(predicate, timeout, interval, what=what)


class Watch(threading.Thread):
    """Every 20 ms: the darknet processes under the farm's runs folder, per run."""

    def __init__(self, runs_dir: Path):
        super().__init__(daemon=True)
        self.runs_dir = str(runs_dir)
        self.duplicates: list[tuple[float, str, int]] = []
        self.done = threading.Event()

    def darknets(self) -> dict[int, str]:
        found = {}
        for p in psutil.process_iter(["name", "cwd"]):
            try:
                cwd = p.info["cwd"] or ""
                if p.info["name"] == "darknet" and cwd.startswith(self.runs_dir):
                    found[p.pid] = Path(cwd).parts[-2]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return found

    def run(self) -> None:
        while not self.done.is_set():
            per_run: dict[str, int] = {}
            for run in self.darknets().values():
                per_run[run] = per_run.get(run, 0) + 1
            for run, n in per_run.items():
                if n > 1:
                    self.duplicates.append((time.time(), run, n))
            time.sleep(0.02)


class Soak:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="chaos-soak-"))
        self.data_dir = self.tmp / "farm"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        self.ports = [str(free_port()) for _ in range(3)]
        env.update(FARM_DATA_DIR=str(self.data_dir), FARM_REDIS_PORT=self.ports[0],
                   FARM_FLOWER_PORT=self.ports[1], FARM_BOARD_PORT=self.ports[2],
                   FARM_HOST_NAME="chaos", FARM_GPU_WORKERS="2", PYTHONPATH=str(REPO))
        self.env = env
        self.up: subprocess.Popen | None = None
        self.up_lines: list[str] = []
        self.kills: list[dict] = []

    # -- the farm -------------------------------------------------------------------------
    def start(self) -> None:
        self.up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up"], env=self.env,
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        threading.Thread(target=lambda: [self.up_lines.append(ln) for ln in self.up.stdout],
                         daemon=True).start()
        wait(lambda: any("workers ready" in ln for ln in self.up_lines) or self.up.poll() is not None,
             180, "farm up")
        if self.up.poll() is not None:
            raise SystemExit("farm up did not start:\n" + "".join(self.up_lines))
        self.store = Store(load(env=self.env).effective_redis_url)

    def record(self) -> dict:
        return json.loads((self.data_dir / "farm-up.pid").read_text())["children"]

    def farm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=self.env,
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    def submit(self) -> str:
        data = micro_dataset(self.tmp / "ds", images=16)
        cfg = micro_cfg(self.tmp / "micro.cfg", max_batches=self.args.iterations)
        n = self.args.trials
        rates = ", ".join(f"{0.001 + 0.004 * i / max(n - 1, 1):.6f}" for i in range(n))
        spec = self.tmp / "sweep.yaml"
        spec.write_text(SPEC.format(data=data, cfg=cfg, rates=rates,
                                    iterations=self.args.iterations))
        r = self.farm("sweep", "submit", str(spec))
        if r.returncode != 0:
            raise SystemExit(f"farm sweep submit: {r.stderr}")
        return r.stdout.strip().split()[0]

    # -- the chaos --------------------------------------------------------------------------
    def training(self) -> dict[str, dict]:
        """Runs training now: run id -> attempt number and iteration."""
        out = {}
        for pid, run in Watch(self.data_dir / "runs").darknets().items():
            live = self.store.progress.live(run)
            out[run] = {"attempt": int(live.get("attempt", 0) or 0),
                        "iteration": int(live.get("iteration", 0) or 0), "darknet": pid}
        return out

    def pick(self, kind: str) -> tuple[str, int, list[str]] | None:
        """A victim of `kind`: (what, pid, runs it trains)."""
        children = self.record()
        darknets = Watch(self.data_dir / "runs").darknets()
        if kind == "darknet":
            if not darknets:
                return None
            pid = random.choice(sorted(darknets))
            return "darknet", pid, [darknets[pid]]
        if kind in ("pool", "worker main"):
            names = [n for n in children if n.startswith("worker-gpu")]
            if kind == "worker main":
                names.append("worker-cpu")
            name = random.choice(names)
            main = children[name]["pid"]
            try:
                pools = psutil.Process(main).children()
            except psutil.NoSuchProcess:
                return None
            trains = [darknets[d.pid] for p in pools for d in p.children() if d.pid in darknets]
            if kind == "worker main":
                return name, main, trains
            busy = [p for p in pools if any(d.pid in darknets for d in p.children())]
            pool = random.choice(busy or pools) if pools else None
            if pool is None:
                return None
            runs = [darknets[d.pid] for d in pool.children() if d.pid in darknets]
            return f"{name} pool", pool.pid, runs
        return kind, children[kind]["pid"], []

    def chaos(self) -> None:
        end = time.monotonic() + self.args.minutes * 60
        while True:
            time.sleep(random.uniform(10, 30))
            if time.monotonic() >= end:
                return
            kind = random.choice(KINDS)
            victim = self.pick(kind)
            if victim is None:
                continue
            what, pid, runs = victim
            before = self.training()
            at = time.time()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append({"at": at, "kind": kind, "what": what, "pid": pid, "runs": runs,
                               "training": before,
                               "child": None if kind in ("pool", "darknet") else what})
            print(f"{time.strftime('%H:%M:%S')} killed {what} (pid {pid})"
                  + (f", training {', '.join(runs)}" if runs else ""), flush=True)

    # -- the report -------------------------------------------------------------------------
    def resumed(self, kill: dict, run_id: str) -> dict:
        """When a run the kill hit trained again, and the iterations it lost."""
        was = kill["training"].get(run_id, {"attempt": 0, "iteration": 0})
        run = self.store.runs.load(run_id)
        later = [a for a in run.attempts if a.started_at > kill["at"]]
        if not later:
            return {"run": run_id, "resume_s": None, "lost": None}
        nxt = later[0]
        first = [float(m["t"]) for _, m in self.store.progress.metrics(run_id, start=f"{int(kill['at'] * 1000)}-0")
                 if m["a"] == str(nxt.number)]
        return {"run": run_id, "resume_s": (min(first) - kill["at"]) if first else None,
                "lost": max(0, was["iteration"] - nxt.start_iteration)}

    def child_back(self, kill: dict) -> float | None:
        died = [e for e in self.store.events.recent(2000)
                if e["child"] == kill["child"] and e["event"] == "restarted" and e["at"] > kill["at"]]
        return min(e["at"] for e in died) - kill["at"] if died else None

    def farm_processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline", "environ", "cwd"]):
            try:
                if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmd = " ".join(p.info["cmdline"] or [])
                if (p.info["environ"] or {}).get("FARM_DATA_DIR") == str(self.data_dir) \
                        or str(self.data_dir) in cmd or str(self.data_dir) in (p.info["cwd"] or "") \
                        or any(f":{port}" in cmd for port in self.ports):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return found

    def orphans(self) -> list[str]:
        """Processes of this farm that are not descendants of `farm up`."""
        try:
            ours = {p.pid for p in psutil.Process(self.up.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            ours = set()
        ours.add(self.up.pid)
        return [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in self.farm_processes()
                if p.pid not in ours]


def median_max(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "none"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={len(values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=300, help="max_batches of each trial")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="minutes the sweep gets to finish after the chaos")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", help="also write the report as JSON here")
    args = ap.parse_args()
    random.seed(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    soak = Soak(args)
    started = time.time()
    try:
        soak.start()
        sweep_id = soak.submit()
        print(f"sweep {sweep_id}: {args.trials} trials of {args.iterations} iterations on 2 gpu "
              f"workers; chaos for {args.minutes:g} min; data in {soak.tmp}", flush=True)
        watch = Watch(soak.data_dir / "runs")
        watch.start()
        soak.chaos()
        chaos_end = time.time()
        print(f"chaos over ({len(soak.kills)} kills); waiting for the sweep", flush=True)
        sweeps = soak.store.sweeps
        try:
            wait(lambda: sweeps.load(sweep_id).state.value != "running", args.drain * 60,
                 "the sweep to end", 2.0)
        except AssertionError as e:
            print(e)
        watch.done.set()
        watch.join()
        return report(soak, sweep_id, watch, started, chaos_end)
    finally:
        if soak.up is not None and soak.up.poll() is None:
            soak.farm("down")
        left = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in soak.farm_processes()]
        print(f"after farm down: {len(left)} process(es) of the farm left" +
              (":\n  " + "\n  ".join(left) if left else ""))


def report(soak: Soak, sweep_id: str, watch: Watch, started: float, chaos_end: float) -> int:
    store = soak.store
    sweeps = store.sweeps
    sweep = sweeps.load(sweep_id)
    trials = sweeps.trials(sweep_id)
    runs = [store.runs.load(t.run_id) for t in trials if t.run_id]
    all_runs = [r for r in store.runs.recent(limit=100_000) if r.sweep == sweep_id]
    once = [r for r in runs if r.state is RunState.COMPLETED
            and sum(a.outcome is Outcome.COMPLETED for a in r.attempts) == 1]
    hits, restarts = [], []
    for kill in soak.kills:
        if kill["kind"] in TRAINING_KINDS:
            hits += [dict(soak.resumed(kill, run), kind=kill["kind"]) for run in kill["runs"]]
        if kill["child"]:
            restarts.append({"child": kill["child"], "back_s": soak.child_back(kill)})
    # every attempt that did not complete must be one a kill of its training cost: a
    # kill of Redis, beat, Flower or the board must cost none
    hit = {}
    for h in hits:
        hit[h["run"]] = hit.get(h["run"], 0) + 1
    collateral = [{"run": r.id, "attempts": [(a.number, a.outcome and a.outcome.value, a.message)
                                             for a in r.attempts], "hits": hit.get(r.id, 0)}
                  for r in all_runs
                  if sum(a.outcome is not Outcome.COMPLETED for a in r.attempts) > hit.get(r.id, 0)]
    children = soak.record()
    alive = {name: psutil.pid_exists(c["pid"]) for name, c in children.items()}
    gave_up = [e for e in store.events.recent(2000) if e["event"] == "gave_up"]
    orphans = soak.orphans()
    by_kind = {k: sum(1 for x in soak.kills if x["kind"] == k) for k in KINDS}
    doc = {
        "sweep": sweep_id, "sweep_state": sweep.state.value, "trials": len(trials),
        "completed_exactly_once": len(once), "runs_of_the_sweep": len(all_runs),
        "duplicates": len(watch.duplicates), "kills": len(soak.kills), "kills_by_kind": by_kind,
        "training_hits": hits, "child_restarts": restarts, "collateral": collateral,
        "farm_up_alive": soak.up.poll() is None, "children_alive": alive, "gave_up": gave_up,
        "orphans": orphans, "minutes": round((chaos_end - started) / 60, 1),
        "total_minutes": round((time.time() - started) / 60, 1),
        "load_average": os.getloadavg(),
    }
    print("\n== chaos soak report ==")
    print(f"sweep {sweep_id}: {sweep.state.value}; {len(trials)} trials, "
          f"{len(once)} completed exactly once; {len(all_runs)} runs made for them")
    print(f"kills: {len(soak.kills)} in {doc['minutes']} min ({', '.join(f'{k} {n}' for k, n in by_kind.items())})")
    print(f"duplicates (two darknet for one run at once, 20 ms poll): {len(watch.duplicates)}")
    print(f"kills that hit a training: {len(hits)}; training again {median_max([h['resume_s'] for h in hits])}")
    for kind in TRAINING_KINDS:
        mine = [h for h in hits if h["kind"] == kind]
        if mine:
            print(f"  {kind:11s}: training again {median_max([h['resume_s'] for h in mine])}; "
                  f"iterations lost max {max((h['lost'] or 0) for h in mine)}")
    print(f"iterations lost per kill: max {max([h['lost'] or 0 for h in hits] or [0])} "
          f"(checkpoint interval 100)")
    print(f"children restarted: {median_max([r['back_s'] for r in restarts])} from kill to running again")
    print(f"attempts: {sum(len(r.attempts) for r in all_runs)} for {len(all_runs)} runs; those "
          f"not completed beyond the kills of their training: {len(collateral)} run(s)")
    print(f"farm up still up: {doc['farm_up_alive']}; children running: "
          f"{sum(alive.values())}/{len(alive)}; given up: {len(gave_up)}; orphans: {len(orphans)}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in doc['load_average'])} "
          f"(2 cores, shared with other work)")
    if soak.args.report:
        Path(soak.args.report).write_text(json.dumps(doc, indent=1))
    ok = (len(once) == len(trials) and not watch.duplicates and doc["farm_up_alive"]
          and all(alive.values()) and not gave_up and not orphans)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
