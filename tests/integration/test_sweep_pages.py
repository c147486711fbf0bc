"""A page of a sweep's leaderboard (what the board and `farm sweep show` print for a big
sweep) is the whole leaderboard cut, with the counts of every trial, though it reads
only the trials something happened to: real redis-server, `advance()` with a recording
enqueue (no workers), runs ended by writing them as the training task would.
"""
from __future__ import annotations

import json
import textwrap
import time

import pytest

from farm.runs.model import RunState
from farm.store import Store
from farm.sweeps.service import advance, leaderboard_of, standings, submit_sweep
from farm.sweeps.spec import load_spec
from tests.integration.test_sweep import cli
from workers.micro import micro_cfg, micro_dataset

pytestmark = pytest.mark.integration


def submitted(farm_settings, tmp_path, body: str):
    micro_dataset(tmp_path / "ds", images=8)
    micro_cfg(tmp_path / "micro.cfg", max_batches=1000)
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    store = Store(farm_settings.effective_redis_url)
    sw = submit_sweep(store, farm_settings, load_spec(path))
    return store, sw.id


def end_run(store: Store, run_id: str, state: RunState, avg_losses: list[float]) -> None:
    for i, v in enumerate(avg_losses, 1):
        store.db.r.xadd(f"farm:run:{run_id}:metrics", {"a": 1, "i": i, "loss": repr(v),
                                                     "avg": repr(v), "rate": "0.001"})
    run = store.runs.load(run_id)
    run.state, run.ended_at = state, time.time()
    store.runs.save(run)


def moved(farm_settings, tmp_path):
    """25 trials, 3 at a time: 6 ended (4 completed, 1 failed, 1 cancelled; 5 of them
    with a value), 3 queued, 1 could not be submitted, 15 untouched."""
    store, sweep_id = submitted(farm_settings, tmp_path, """
        base: {data: ds/obj.data, cfg: micro.cfg}
        parameters: {learning_rate: {log_uniform: [0.0005, 0.005]}}
        trials: 25
        seed: 2
        concurrency: 3
        objective: min_avg_loss
        """)
    sweeps = store.sweeps
    ends = [(RunState.COMPLETED, [5.0, 3.0, 2.5]), (RunState.FAILED, []),
            (RunState.COMPLETED, [4.0, 1.5]), (RunState.CANCELLED, [6.0, 5.5]),
            (RunState.COMPLETED, [2.0, 2.1]), (RunState.COMPLETED, [9.0, 2.5])]
    for state, losses in ends:
        advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "task", early_stop=False)
        trial = next(t for t in sweeps.trials(sweep_id) if t.run_id and not t.result
                     and not store.runs.load(t.run_id).state.finished)
        end_run(store, trial.run_id, state, losses)
    advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "task", early_stop=False)
    untried = next(t for t in sweeps.trials(sweep_id) if not t.run_id)
    untried.error = "could not be submitted: its files vanished"
    sweeps.save_trial(sweep_id, untried)
    return store, sweep_id


def same(a, b) -> bool:
    return [(r.trial, r.rank, r.state, r.best, r.run_id) for r in a] == \
        [(r.trial, r.rank, r.state, r.best, r.run_id) for r in b]


def test_every_page_is_the_whole_leaderboard_cut(farm_settings, tmp_path):
    store, sweep_id = moved(farm_settings, tmp_path)
    _, _, whole = leaderboard_of(store, sweep_id)
    assert len(whole) == 25 and sum(r.rank is not None for r in whole) == 5
    counts: dict[str, int] = {}
    for r in whole:
        counts[r.state] = counts.get(r.state, 0) + 1
    assert counts == {"completed": 4, "failed": 2, "cancelled": 1, "queued": 3, "pending": 15}
    for per in (1, 4, 7, 25, 40):
        for page in range(1, -(-25 // per) + 2):
            st = standings(store, sweep_id, page, per)
            assert st.total == 25 and st.counts == counts and st.ranked == 5
            assert same(st.rows, whole[(page - 1) * per:page * per]), (per, page)
    first = standings(store, sweep_id, 1, 3)
    assert set(first.observed) == {r.trial for r in first.rows}  # curves of the page only
    assert first.observed[first.rows[0].trial].loss[0][1] == 1.5


def test_a_sweep_stored_before_the_plan_hash_reads_the_same(farm_settings, tmp_path):
    store, sweep_id = moved(farm_settings, tmp_path)
    sweeps = store.sweeps
    _, _, whole = leaderboard_of(store, sweep_id)
    old = {str(t.index): json.dumps({k: v for k, v in t.to_dict().items() if k != "run_id"})
           for t in sweeps.trials(sweep_id)}
    store.db.r.delete(f"farm:sweep:{sweep_id}:plan")
    store.db.r.hset(f"farm:sweep:{sweep_id}:trials", mapping=old)
    assert same(leaderboard_of(store, sweep_id)[2], whole)
    assert same(standings(store, sweep_id, 2, 10).rows, whole[10:20])
    # the controller goes on writing such a sweep's trials whole, plan included
    trial = sweeps.trials(sweep_id)[20]
    trial.cancelled = True
    sweeps.save_trial(sweep_id, trial)
    again = sweeps.trials(sweep_id)[20]
    assert again.cancelled and again.params == trial.params and again.cfg == trial.cfg


def test_trials_waiting_for_their_dataset_count_as_building(farm_settings, tmp_path):
    store, sweep_id = submitted(farm_settings, tmp_path, """
        base:
          recipe:
            synth: {n: 20, seed: 1, canvas: [64, 64], mark_px: [12, 24]}
            package: {valid_ratio: 0.25, network: [64, 64], seed: 1}
          cfg: micro.cfg
        parameters: {synth.blur: [0.0, 0.5], learning_rate: [0.001, 0.002, 0.004]}
        concurrency: 2
        """)
    advance(store, farm_settings, sweep_id, enqueue=lambda r, q: "task")  # no build sent
    st = standings(store, sweep_id, 1, 4)
    assert st.total == 6 and st.counts == {"building": 6}
    assert [r.trial for r in st.rows] == [0, 1, 2, 3]
    assert same(st.rows, leaderboard_of(store, sweep_id)[2][:4])


def test_sweep_show_prints_a_page_and_the_counts(farm, tmp_path, capsys):
    store, sweep_id = moved(farm.settings, tmp_path)
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--limit", "5")
    lines = out.splitlines()
    assert code == 0 and "  25 trials, concurrency 3" in lines[1]
    assert lines[2] == "  3 queued, 15 pending, 4 completed, 2 failed, 1 cancelled"
    head = next(k for k, x in enumerate(lines) if x.startswith("RANK TRIAL"))
    rows = [x for x in lines[head + 1:-1] if not x.strip().startswith("why:")]
    assert len(rows) == 5 and [x.split()[0] for x in rows] == ["1", "2", "3", "4", "5"]
    assert lines[-1] == (f"  rows 1-5 of 25; `farm sweep show {sweep_id} --page 2` for more, "
                         "--all for every trial")
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--limit", "5", "--page", "5")
    assert out.splitlines()[-1] == "  rows 21-25 of 25, --all for every trial"
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--all")
    lines = out.splitlines()
    head = next(k for k, x in enumerate(lines) if x.startswith("RANK TRIAL"))
    assert "rows " not in out
    assert len([x for x in lines[head + 1:] if not x.strip().startswith("why:")]) == 25
    code, out, _ = cli(capsys, "sweep", "show", sweep_id, "--json")
    doc = json.loads(out)
    assert doc["total"] == 25 and len(doc["leaderboard"]) == 25
    assert doc["counts"]["pending"] == 15
