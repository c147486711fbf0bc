"""Speed and ETA as pure functions: what `--wait`, `farm runs` and Flower's events show."""
from __future__ import annotations

import pytest

from farm.eval.evaluation import Evaluation
from farm.runs.progress import (Progress, eta, format_duration, format_rate, is_stale,
                                measure, rate, samples_of, sweep_eta)


def test_rate_counts_each_flush_once_with_the_highest_iteration_done_by_then():
    # flushed every 0.5 s, 10 iterations a flush, all stamped with the flush's time
    samples = [(100.0 + 0.5 * k, 10 * k + j) for k in range(1, 9) for j in range(1, 11)]
    assert rate(samples) == pytest.approx(20.0)


def test_rate_measures_the_newest_window_only():
    slow = [(float(t), t) for t in range(0, 300)]              # 1 it/s for 300 s
    fast = [(300.0 + t, 300 + 4 * t) for t in range(1, 200)]   # then 4 it/s
    assert rate(slow + fast, window=120) == pytest.approx(4.0)
    assert rate(slow + fast, window=1000) == pytest.approx((1096 - 0) / 499)


def test_rate_of_a_slow_cpu_run_uses_the_two_newest_samples():
    samples = [(0.0, 1), (300.0, 2), (650.0, 3)]  # one iteration every 5-6 minutes
    assert rate(samples, window=120) == pytest.approx(1 / 350)


@pytest.mark.parametrize("samples", [[], [(5.0, 10)], [(5.0, 10), (5.0, 12)],
                                     [(5.0, 10), (6.0, 10)]])
def test_no_rate_without_two_moments_of_progress(samples):
    assert rate(samples) is None


def test_eta_is_what_is_left_over_the_speed():
    assert eta(340, 600, 13.0) == pytest.approx(20.0)
    assert eta(600, 600, None) == 0.0 and eta(700, 600, 2.0) == 0.0
    assert eta(10, 600, None) is None and eta(10, 600, 0.0) is None


def test_a_speed_is_stale_when_darknet_stopped_printing():
    assert not is_stale(newest=1000.0, speed=2.0, now=1100.0)
    assert is_stale(newest=1000.0, speed=2.0, now=1121.0)           # past the window
    assert not is_stale(newest=1000.0, speed=0.01, now=1250.0)      # 100 s/it: 300 s
    assert is_stale(newest=1000.0, speed=0.01, now=1301.0)
    assert is_stale(newest=None, speed=None, now=0.0)


def test_sweep_eta_fills_free_gpus_first_then_the_one_that_frees_first():
    # two GPUs: trials ending in 10 s and 30 s; three pending trials of 100 s each
    assert sweep_eta([10.0, 30.0], 3, 2, 100.0) == pytest.approx(210.0)
    # a free GPU takes a pending trial at once
    assert sweep_eta([50.0], 1, 2, 100.0) == pytest.approx(100.0)
    assert sweep_eta([], 4, 2, 60.0) == pytest.approx(120.0)
    assert sweep_eta([12.0, 7.0], 0, 2, None) == 12.0
    assert sweep_eta([12.0, None], 0, 2, 5.0) is None   # a trial without a speed yet
    assert sweep_eta([12.0], 2, 1, None) is None        # no trial length known


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (44.6, "45s"), (125, "2m05s"),
                                          (3725, "1h02m"), (90000, "1d01h"),
                                          (None, "-"), (float("inf"), "-")])
def test_durations_read_as_people_write_them(seconds, text):
    assert format_duration(seconds) == text


def test_rates_below_one_per_second_read_as_seconds_per_iteration():
    assert format_rate(12.34) == "12.3 it/s"
    assert format_rate(0.25) == "4 s/it"
    assert format_rate(None) == "-" and format_rate(0.0) == "-"


def test_the_live_line_names_every_figure():
    p = Progress(iteration=340, max_batches=600, speed=13.0, avg_loss=1.2345,
                 last_map=0.4567, last_map_iteration=300, restarts=1, attempt=2)
    assert p.line() == ("iteration 340/600 (56 %), 13 it/s, ETA 20s, avg loss 1.234, "
                        "mAP 45.67 % @300, restarts 1")
    fresh = Progress(iteration=0, max_batches=600)
    assert fresh.line() == "iteration 0/600 (0 %), -, ETA -, avg loss -, mAP -, restarts 0"


def _entry(attempt: int, i: int, t: float | None) -> tuple[str, dict]:
    m = {"a": str(attempt), "i": str(i), "avg": "1.5"}
    if t is not None:
        m["t"] = f"{t:.3f}"
    return f"{i}-0", m


def test_only_the_current_attempt_measures_the_speed():
    entries = [_entry(1, i, 1000 + i / 2) for i in range(1, 50)]          # 2 it/s, diverged
    entries += [_entry(2, 40 + i, 2000 + i / 10) for i in range(1, 50)]   # 10 it/s now
    assert samples_of(entries, 2)[0] == (2000.1, 41)
    p = measure(iteration=0, max_batches=1089, attempts=2,
                live={"attempt": "2", "iteration": "89", "avg_loss": "0.75"},
                recent=entries, evaluations=[], now=2005.0)
    assert p.speed == pytest.approx(10.0) and p.eta == pytest.approx(100.0)
    assert p.restarts == 1 and p.avg_loss == 0.75 and p.iteration == 89


def test_measure_takes_the_newest_scored_evaluation_and_no_speed_when_not_running():
    evaluations = [Evaluation(iteration=100, map=0.2),
                   Evaluation(iteration=300, map=None, error="poisoned"),
                   Evaluation(iteration=200, map=0.35)]
    entries = [_entry(1, i, 10 + i) for i in range(1, 20)]
    p = measure(iteration=300, max_batches=300, attempts=1, live={}, recent=entries,
                evaluations=evaluations, now=30.0, running=False)
    assert (p.last_map, p.last_map_iteration) == (0.35, 200)
    assert p.speed is None and p.eta == 0.0 and p.iteration == 300


def test_a_stalled_run_has_no_eta():
    entries = [_entry(1, i, 10 + i) for i in range(1, 20)]
    p = measure(iteration=0, max_batches=100, attempts=1, live={"iteration": "19"},
                recent=entries, evaluations=[], now=29.0 + 500)
    assert p.speed is None and p.eta is None


def test_the_short_form_fits_several_trials_on_one_line():
    from farm.runs.progress import short
    p = Progress(iteration=340, max_batches=600, speed=13.0, avg_loss=1.2345,
                 last_map=0.4567, last_map_iteration=300, restarts=1)
    assert short(p) == "340/600 13 it/s ETA 20s loss 1.234 mAP 45.67 % r1"
    assert short(Progress(iteration=0, max_batches=600)) == "0/600 - ETA - loss - r0"
