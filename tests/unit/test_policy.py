"""The restart policy as a pure function: what follows each outcome, and when it stops."""
from __future__ import annotations

import pytest

from farm.errors import BadInput
from farm.runs.effective import attempt_at, effective_settings
from farm.runs.model import Attempt, Checkpoint, Outcome, Run
from farm.runs.policy import GiveUp, Policy, Restart, next_attempt, oom_remedy
from farm.runs.schedule import darknet_rate, fit_steps, rewarm
from farm.settings import Settings

BASE = {"learning_rate": "0.05", "batch": "4", "subdivisions": "1", "burn_in": "0",
        "power": "4", "policy": "steps", "steps": "800,900", "scales": ".1,.1",
        "width": "416", "height": "416", "random": "1"}


def make_run(weights=None, max_batches=1000) -> Run:
    return Run(id="r1", data="/d/obj.data", cfg="/d/net.cfg", weights=weights, base_dir="/d",
               overrides={}, policy=Policy().to_dict(), host="h", created_at=0.0,
               max_batches=max_batches)


def add_attempt(run: Run, outcome: Outcome, bad_at=None, start=0, hyper=None,
                restart: Restart | None = None) -> Attempt:
    hyper = dict(restart.hyper) if restart else dict(hyper or BASE)
    a = Attempt(number=len(run.attempts) + 1, command=[], hyper=hyper, start_weights=None,
                start_iteration=start, host="h", workdir="", log_path="", started_at=0.0,
                outcome=outcome, first_bad_iteration=bad_at, requested=dict(BASE),
                rate=restart.rate if restart else None)
    run.attempts.append(a)
    return a


def checkpoint(run: Run, iteration: int, attempt: int) -> None:
    path = f"/c/iter-{iteration}.weights"
    run.checkpoints.append(Checkpoint(iteration, path, f"/b/net_{iteration}", True, attempt, 0))
    run.good_checkpoint = path


def test_a_restart_from_a_checkpoint_warms_up_again_from_where_it_resumes():
    run = make_run(weights="/w/start.weights")
    add_attempt(run, Outcome.DIVERGED, bad_at=350)
    checkpoint(run, 300, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert isinstance(r, Restart) and r.weights == "/c/iter-300.weights" and r.rate == 0.025
    window = max(100, 20)  # max(burn_in_min, 2 % of max_batches)
    assert r.hyper["burn_in"] == str(300 + window)
    assert r.changes["learning_rate"] == ["0.05", "0.025"]
    # darknet's own formula on the values it is given: a tenth of the rate at most on the
    # first iteration after the resume (0.01 by default), the full rate at the window's end
    assert darknet_rate(r.hyper, 301) <= 0.025 * 0.01 * (1 + 1e-6)
    assert darknet_rate(r.hyper, 300 + window) == pytest.approx(0.025)
    assert darknet_rate(r.hyper, 850) == pytest.approx(0.0025)  # the steps still come
    assert "warming up again from iteration 300 to 400" in r.reason
    # what changed, and nothing else: `.1,.1` written back as `0.1,0.1` is no change
    assert set(r.changes) == {"learning_rate", "burn_in", "power"}


def test_a_late_resume_folds_the_steps_already_passed_into_the_rate():
    run = make_run(max_batches=2000)
    own = dict(BASE, steps="800,1800")
    add_attempt(run, Outcome.DIVERGED, bad_at=870, hyper=own)
    run.attempts[-1].requested = own
    checkpoint(run, 850, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert r.hyper["burn_in"] == "950" and r.hyper["steps"] == "1800"
    assert r.hyper["scales"] == "0.1" and float(r.hyper["learning_rate"]) == pytest.approx(0.0025)
    # during burn-in darknet ramps to the unstepped learning_rate: folded, it climbs to
    # the rate the schedule is at, not to 0.025 and then down
    assert max(darknet_rate(r.hyper, i) for i in range(851, 1800)) == pytest.approx(0.0025)
    assert darknet_rate(r.hyper, 851) <= 0.0025 * 0.01 * (1 + 1e-6)
    assert darknet_rate(r.hyper, 1800) == pytest.approx(0.00025)
    assert r.rate == 0.025  # what the trial trains at, as its cfg means learning_rate
    # near the end the window is half of what is left, and every step passed: constant
    warm = rewarm(BASE, 0.025, 850, 1000, window_size=100, start=0.01)
    assert warm.end == 925 and warm.hyper["policy"] == "constant"
    assert darknet_rate(warm.hyper, 925) == pytest.approx(0.00025)


def test_a_scratch_restart_warms_up_over_the_window_and_keeps_a_longer_own_burn_in():
    run = make_run(max_batches=80)
    add_attempt(run, Outcome.DIVERGED, bad_at=6)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert r.weights is None and r.hyper["burn_in"] == "40"  # half of the 80 left, not 100
    assert r.hyper["power"] == "4"  # (1/40)^4 is far below a tenth
    long = dict(BASE, burn_in="500")
    warm = rewarm(long, 0.025, 0, 1000, window_size=100, start=0.01)
    assert warm.hyper["burn_in"] == "500" and warm.end == 500


def test_three_divergences_take_the_rate_from_5_to_0_625_and_say_so():
    run = make_run(max_batches=80)
    run.attempts.append(Attempt(1, [], dict(BASE, learning_rate="5.0"), None, 0, "h", "", "",
                                0.0, outcome=Outcome.DIVERGED, first_bad_iteration=3,
                                requested=dict(BASE, learning_rate="5.0")))
    for _ in range(3):
        r = next_attempt(run, run.attempts[-1], Policy())
        add_attempt(run, Outcome.DIVERGED, bad_at=50, restart=r)
        run.attempts[-1].requested = dict(BASE, learning_rate="5.0")
    run.attempts[-1].outcome = Outcome.COMPLETED
    eff = effective_settings(run)
    assert eff.effective["learning_rate"] == "0.625"
    assert eff.text.startswith("learning_rate 5.0 -> 0.625")
    assert eff.text.endswith("after 3 restarts") and "burn_in 0 -> 40" in eff.text
    assert int(run.attempts[-1].hyper["burn_in"]) <= 40  # never later than half the budget


def test_a_restart_that_cannot_warm_up_ends_the_run_saying_why():
    run = make_run()
    add_attempt(run, Outcome.DIVERGED, bad_at=999)
    checkpoint(run, 998, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert isinstance(r, GiveUp) and "too few to warm up again" in r.reason
    run = make_run()
    add_attempt(run, Outcome.DIVERGED, bad_at=420, hyper=dict(BASE, policy="poly"))
    run.attempts[-1].requested = dict(BASE, policy="poly")
    checkpoint(run, 400, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert isinstance(r, GiveUp) and "policy=poly" in r.reason


def test_divergence_gives_up_after_max_restarts():
    run = make_run()
    for _ in range(3):
        r = next_attempt(run, add_attempt(run, Outcome.DIVERGED), Policy())
        assert isinstance(r, Restart)
    r = next_attempt(run, add_attempt(run, Outcome.DIVERGED), Policy())
    assert isinstance(r, GiveUp) and "max_divergence_restarts 3 used" in r.reason


@pytest.mark.parametrize("outcome", [Outcome.CRASHED, Outcome.STALLED])
def test_crashes_far_apart_go_on_and_a_loop_without_progress_ends(outcome):
    run = make_run()
    add_attempt(run, outcome)
    checkpoint(run, 400, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    assert isinstance(r, Restart) and r.changes == {} and r.hyper == BASE
    add_attempt(run, outcome, start=400)
    checkpoint(run, 800, 2)  # 400 iterations later: the budget starts again
    assert isinstance(next_attempt(run, run.attempts[-1], Policy()), Restart)
    add_attempt(run, outcome, start=800)  # no progress since the last one
    r = next_attempt(run, run.attempts[-1], Policy())
    assert isinstance(r, GiveUp) and "2 attempts" in r.reason and "in a row" in r.reason
    # crash_restarts=4: five in a row end it, four do not
    run = make_run()
    for n in range(1, 6):
        r = next_attempt(run, add_attempt(run, outcome), Policy(crash_restarts=4,
                                                                stall_restarts=4))
        assert isinstance(r, GiveUp) == (n == 5)


def test_out_of_memory_doubles_subdivisions_then_random_then_shrinks_the_network():
    policy = Policy()
    hyper, steps = dict(BASE), []
    while (change := oom_remedy(hyper, policy)) is not None:
        steps.append({k: v[1] for k, v in change.items()})
        hyper.update(steps[-1])
    assert steps[:3] == [{"subdivisions": "2"}, {"subdivisions": "4"}, {"random": "0"}]
    assert steps[3] == {"width": "384", "height": "384"}
    assert hyper["width"] == "128" and len(steps) == 3 + (416 - 128) // 32
    assert oom_remedy(dict(BASE, batch="6", subdivisions="4"), policy) == \
        {"subdivisions": ("4", "6")}  # a divisor of batch, never past it
    run = make_run()
    r = next_attempt(run, add_attempt(run, Outcome.OUT_OF_MEMORY), policy)
    assert r.changes == {"subdivisions": ["1", "2"]} and r.hyper["subdivisions"] == "2"
    assert r.hyper["learning_rate"] == "0.05"  # the schedule itself is untouched
    r = next_attempt(run, add_attempt(run, Outcome.OUT_OF_MEMORY, hyper=hyper), policy)
    assert isinstance(r, GiveUp) and "no remedy left" in r.reason


@pytest.mark.parametrize("outcome", [Outcome.BAD_INPUT, Outcome.CANCELLED, Outcome.COMPLETED])
def test_bad_input_cancel_and_completion_are_never_retried(outcome):
    run = make_run()
    assert isinstance(next_attempt(run, add_attempt(run, outcome), Policy()), GiveUp)


def test_a_list_written_back_in_another_spelling_is_no_change():
    run = make_run()
    add_attempt(run, Outcome.COMPLETED)
    a = run.attempts[0]
    a.requested = dict(a.hyper, scales=".1,.1", steps="800,900")
    a.hyper = dict(a.hyper, scales="0.1,0.1", steps="800,900.0")
    assert effective_settings(run).text == "as requested"
    a.hyper["scales"] = "0.1,0.5"
    assert effective_settings(run).changed == {"scales": [".1,.1", "0.1,0.5"]}


def test_the_attempt_that_wrote_the_weights_is_the_one_shown():
    run = make_run()
    add_attempt(run, Outcome.DIVERGED, bad_at=120)
    checkpoint(run, 100, 1)
    r = next_attempt(run, run.attempts[-1], Policy())
    second = add_attempt(run, Outcome.COMPLETED, start=100, restart=r)
    second.last_iteration = 1000
    assert attempt_at(run, 100).number == 1 and attempt_at(run, 500).number == 2
    assert effective_settings(run, attempt_at(run, 100)).text == "as requested"
    checkpoint(run, 1000, 2)
    assert effective_settings(run).effective["learning_rate"] == "0.025"


def test_max_batches_scales_steps_as_a_budget_does():
    assert fit_steps(1000, [800, 900], "steps", {"max_batches": "200"}) == "160,180"
    assert fit_steps(1000, [800, 900], "steps", {"max_batches": "200", "steps": "5"}) is None
    assert fit_steps(1000, [800, 900], "constant", {"max_batches": "200"}) is None


def test_policy_overrides_are_checked():
    p = Policy.from_settings(Settings(), {"max_divergence_restarts": "5"})
    assert p.max_divergence_restarts == 5 and p.lr_factor == 0.5
    with pytest.raises(BadInput, match="unknown policy key 'max_restarts'"):
        Policy.from_settings(Settings(), {"max_restarts": "5"})
    with pytest.raises(BadInput, match="not a number"):
        Policy.from_settings(Settings(), {"lr_factor": "half"})
    with pytest.raises(BadInput, match="rewarm_start"):
        Policy.from_settings(Settings(), {"rewarm_start": "0.5"})
    # a run recorded by an older farm still loads
    assert Policy.from_dict({"burn_in_factor": 2.0, "lr_factor": 0.25}).lr_factor == 0.25


def test_no_space_is_not_the_runs_fault_it_resumes_as_it_was_however_often():
    run = make_run()
    checkpoint(run, 300, 1)
    last = None
    for _ in range(Policy().crash_restarts + Policy().lost_restarts + 3):
        last = add_attempt(run, Outcome.NO_SPACE, start=300)
        r = next_attempt(run, last, Policy())
        assert isinstance(r, Restart) and r.weights == "/c/iter-300.weights"
        assert r.changes == {} and r.hyper == BASE and "no_space" in r.reason
    # and it does not count against the crash budget either
    assert isinstance(next_attempt(run, add_attempt(run, Outcome.CRASHED, start=300),
                                   Policy()), Restart)
