"""A run killed with SIGKILL after step 7 and resumed from its step-5 checkpoint repeats the reference losses."""

from __future__ import annotations

import signal

import pytest

from train_helpers import losses, run_train

pytestmark = pytest.mark.timeout(300)


def test_sigkill_and_resume_gives_the_same_losses(baseline, tmp_path):
    killed = run_train(tmp_path, [], env={"MEDITRON_KILL_AFTER_STEP": "7"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert max(losses(tmp_path)) == 7
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_00000005"]  # nothing half-written left behind
    run_train(tmp_path, [])
    got, want = losses(tmp_path), losses(baseline)
    assert sorted(got) == list(range(1, 11))
    for step in range(6, 11):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
    # the schedule and the data moved on: the losses are not all the same number
    assert len({round(want[s], 6) for s in range(6, 11)}) > 1
