"""Seeded splits, upsampling, replay budget, the mixture table."""

from __future__ import annotations

from meditron.corpus import mix


def test_split_fraction_and_determinism():
    ids = [f"doc{i}" for i in range(20000)]
    val = [i for i in ids if mix.split_of(1234, i, 0.05) == "validation"]
    assert 0.045 < len(val) / len(ids) < 0.055
    assert val == [i for i in ids if mix.split_of(1234, i, 0.05) == "validation"]     # same seed, same split
    assert val != [i for i in ids if mix.split_of(1, i, 0.05) == "validation"]
    assert all(mix.split_of(1234, i, 0.0) == "train" for i in ids[:100])


def test_repeats_stochastic_rounding():
    reps = [mix.repeats(7, f"d{i}", 1.5) for i in range(10000)]
    assert set(reps) == {1, 2} and 0.47 < sum(reps) / len(reps) - 1 < 0.53
    assert all(mix.repeats(7, f"d{i}", 2.0) == 2 for i in range(50))
    assert all(mix.repeats(7, f"d{i}", 0.0) == 0 for i in range(50))


def test_replay_budget():
    assert mix.replay_budget(99_000, 0.01) == 1000            # replay / (medical + replay) = 1%
    assert mix.replay_budget(99_000, 0.0) == 0


def test_mixture_table_form():
    rows = [{"source": "guidelines", "train_docs": 95, "validation_docs": 5, "train_tokens": 1000, "validation_tokens": 50},
            {"source": "replay", "train_docs": 3, "validation_docs": 0, "train_tokens": 10, "validation_tokens": 0}]
    md = mix.mixture_table(rows)
    assert md.splitlines()[0].startswith("| Dataset | Train samples | Val samples | Train tokens | Val tokens |")
    assert "| guidelines | 95 | 5 (5.0%) | 1,000 | 50 |" in md
    assert "| **Total** | 98 | 5 | **1,010** | 50 |" in md
