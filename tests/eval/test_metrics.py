"""Voting, bootstrap CI, ECE."""

import pytest

from meditron.eval.scoring import bootstrap_ci, ece, majority_vote, mean_std


def test_majority_vote_and_tie_break():
    assert majority_vote(["A", "B", "B", "C", None]) == "B"
    assert majority_vote(["C", "A", "A", "C", "B"]) == "C"  # tie: the first to appear wins
    assert majority_vote(["A", "C", "C", "A"]) == "A"
    assert majority_vote([None, None, "D"]) == "D"  # unparseable samples do not vote
    assert majority_vote([None, None]) is None
    assert majority_vote(["yes", "maybe", "maybe"]) == "maybe"


def test_bootstrap_ci_known_cases():
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 50) == (0.0, 0.0)
    lo, hi = bootstrap_ci([1.0] * 500 + [0.0] * 500, n_boot=2000)
    # normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 1000) = 0.5 +- 0.031
    assert lo == pytest.approx(0.469, abs=0.006) and hi == pytest.approx(0.531, abs=0.006)
    assert bootstrap_ci([1.0, 0.0, 1.0], seed=3) == bootstrap_ci([1.0, 0.0, 1.0], seed=3)


def test_ece_and_mean_std():
    assert ece([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert ece([0.9] * 10, [1.0] * 5 + [0.0] * 5) == pytest.approx(0.4)
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, 0.1414213), rel=1e-5)
    assert mean_std([0.5]) == (0.5, 0.0)
