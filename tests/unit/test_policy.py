"""The restart policy as a pure function: what follows each outcome, and when it stops."""
from __future__ import annotations

import pytest

from farm.errors import BadInput
from farm.runs.model import Attempt, Checkpoint, Outcome, Run
from farm.runs.policy import Policy, next_attempt
from farm.settings import Settings


def make_run(weights=None) -> Run:
    return Run(id="r1", data="/d/obj.data", cfg="/d/net.cfg", weights=weights, base_dir="/d",
               overrides={}, policy=Policy().to_dict(), host="h", created_at=0.0,
               max_batches=1000)


def add_attempt(run: Run, outcome: Outcome, lr="0.05", burn_in="0", bad_at=None) -> Attempt:
    a = Attempt(number=len(run.attempts) + 1, command=[], hyper={"learning_rate": lr,
                "burn_in": burn_in}, start_weights=None, start_iteration=0, host="h",
                workdir="", log_path="", started_at=0.0, outcome=outcome,
                first_bad_iteration=bad_at)
    run.attempts.append(a)
    return a


def test_divergence_halves_the_rate_doubles_burn_in_and_resumes_from_the_good_checkpoint():
    run = make_run(weights="/w/start.weights")
    run.checkpoints.append(Checkpoint(300, "/c/iter-300.weights", "/b/net_300.weights", True, 1, 0))
    run.good_checkpoint = "/c/iter-300.weights"
    last = add_attempt(run, Outcome.DIVERGED, lr="0.004", burn_in="200", bad_at=350)
    r = next_attempt(run, last, Policy())
    assert r.weights == "/c/iter-300.weights"
    assert r.changes == {"learning_rate": ["0.004", "0.002"], "burn_in": ["200", "400"]}
    assert "diverged at iteration 350" in r.reason and "iteration 300" in r.reason


def test_divergence_without_checkpoint_restarts_from_the_start_weights_with_a_burn_in_floor():
    run = make_run(weights="/w/start.weights")
    last = add_attempt(run, Outcome.DIVERGED, burn_in="0", bad_at=6)
    r = next_attempt(run, last, Policy(burn_in_min=100))
    assert r.weights == "/w/start.weights" and r.changes["burn_in"] == ["0", "100"]


def test_divergence_gives_up_after_max_restarts():
    run = make_run()
    for _ in range(3):
        assert next_attempt(run, add_attempt(run, Outcome.DIVERGED), Policy()) is not None
    assert next_attempt(run, add_attempt(run, Outcome.DIVERGED), Policy()) is None


@pytest.mark.parametrize("outcome", [Outcome.CRASHED, Outcome.STALLED])
def test_crash_and_stall_restart_once_with_the_same_settings(outcome):
    run = make_run()
    r = next_attempt(run, add_attempt(run, outcome), Policy())
    assert r is not None and r.changes == {}
    assert next_attempt(run, add_attempt(run, outcome), Policy()) is None


@pytest.mark.parametrize("outcome", [Outcome.BAD_INPUT, Outcome.CANCELLED, Outcome.COMPLETED])
def test_bad_input_cancel_and_completion_are_never_retried(outcome):
    run = make_run()
    assert next_attempt(run, add_attempt(run, outcome), Policy()) is None


def test_policy_overrides_are_checked():
    p = Policy.from_settings(Settings(), {"max_divergence_restarts": "5"})
    assert p.max_divergence_restarts == 5 and p.lr_factor == 0.5
    with pytest.raises(BadInput, match="unknown policy key 'max_restarts'"):
        Policy.from_settings(Settings(), {"max_restarts": "5"})
    with pytest.raises(BadInput, match="not a number"):
        Policy.from_settings(Settings(), {"lr_factor": "half"})
