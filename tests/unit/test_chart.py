"""farm.runs.chart: folding the metrics stream into buckets (tests/unit/test_runchart.py: drawing)."""
from __future__ import annotations

import math

from farm.runs import chart
from farm.runs.chart import (A, AMAX, AMIN, BAD, COUNT, FIRST, LAST, LMAX, LMIN, empty_state, fold,
                        iterations_per_second)


def entries(rows, start_id=1, t0=1000.0, dt=0.25):
    """Stream entries as ProgressStore.record writes them: (attempt, iteration, loss, avg)."""
    out = []
    for k, (a, i, loss, avg) in enumerate(rows):
        out.append((f"{start_id + k}-0", {"a": str(a), "i": str(i), "loss": repr(loss),
                                          "avg": repr(avg), "rate": "0.001", "s": "0.1",
                                          "t": f"{t0 + k * dt:.3f}"}))
    return out


def lineage(n1=250, bad_at=250, resume=200, n2=2000):
    """Attempt 1 diverges at `bad_at`; attempt 2 resumes from `resume`."""
    rows = [(1, i, 10 / i, 10 / i) for i in range(1, n1)]
    rows.append((1, bad_at, math.nan, math.nan))
    rows += [(2, i, 1 / i + 0.1, 1 / i + 0.1) for i in range(resume + 1, resume + 1 + n2)]
    return rows


def test_fold_keeps_every_iteration_and_never_merges_across_a_restart():
    rows = lineage()
    state = fold(empty_state(), entries(rows), target=50)
    buckets = state["buckets"]
    assert state["n"] == len(rows) and state["last_id"] == f"{len(rows)}-0"
    assert sum(b[COUNT] for b in buckets) == len(rows)
    assert len(buckets) <= 2 * 50 + 1
    assert all(b[COUNT] <= state["size"] for b in buckets)
    # attempts never share a bucket, and they stay in order
    attempts = [b[A] for b in buckets]
    assert attempts == sorted(attempts) and set(attempts) == {1, 2}
    first_of_2 = next(b for b in buckets if b[A] == 2)
    assert first_of_2[FIRST] == 201
    # min/max survive the merging: the extremes of all finite values
    assert min(b[LMIN] for b in buckets) == min(r[2] for r in rows if math.isfinite(r[2]))
    assert max(b[AMAX] for b in buckets) == 10.0
    assert sum(b[BAD] for b in buckets) == 2  # loss and avg of the nan line


def test_fold_is_incremental():
    rows = entries(lineage(n2=500))
    whole = fold(empty_state(), rows, target=40)
    parts = empty_state()
    for k in range(0, len(rows), 37):
        fold(parts, rows[k:k + 37], target=40)
    assert parts == whole


def test_iterations_per_second_from_the_newest_samples():
    state = fold(empty_state(), entries([(1, i, 1.0, 1.0) for i in range(1, 101)], dt=0.5))
    last_t = state["tail"][-1][0]
    assert iterations_per_second(state, now=last_t + 1) == 2.0
    assert iterations_per_second(state, now=last_t + 600) == 0.0  # stopped long ago
    assert iterations_per_second(None) == 0.0


def test_fold_then_update_chart_reads_only_what_is_new():
    class FakeStream:  # a chart.ChartStream over an in-memory metrics stream
        def __init__(self, rows):
            self.rows, self.saved, self.reads = rows, None, 0

        def chart_state(self, run_id):
            return self.saved, len(self.rows)

        def metrics_after(self, run_id, after, count):
            self.reads += 1
            k = 0 if after == "0-0" else int(after.split("-")[0])
            return self.rows[k:k + count]

        def save_chart_state(self, run_id, doc):
            self.saved = {k: v for k, v in doc.items() if k != "behind"}

    rows = entries(lineage(n2=300))
    store = FakeStream(rows[:100])
    state = chart.update_chart(store, "r", chunk=40)
    assert state["n"] == 100 and store.reads == 3 and state["behind"] == 0
    store.rows = rows
    state = chart.update_chart(store, "r", max_entries=50, chunk=40)
    assert state["n"] == 150 and state["behind"] == len(rows) - 150
    state = chart.update_chart(store, "r")
    assert state["n"] == len(rows) and state["buckets"][-1][LAST] == 500
    assert state["buckets"][-1][AMIN] is not None and state["buckets"][0][LMAX] == 10.0
