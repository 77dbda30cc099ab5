"""dp, HSDP, tp, pp (1F1B and GPipe) and dp×tp layouts compute the single-process losses; a dp2×tp2 checkpoint
resumes at dp4 and a pp2 checkpoint on one process."""

from __future__ import annotations


import pytest
import torch

from train_helpers import losses, run_train

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

THREE = ["train.steps=3", "optim.schedule_steps=10"]  # same LR schedule as the 10-step reference


def assert_close(got: dict[int, float], want: dict[int, float], steps, rel=1e-5):
    for s in steps:
        assert got[s] == pytest.approx(want[s], rel=rel), f"step {s}: {got[s]} vs {want[s]}"


@pytest.mark.parametrize("layout", [["parallel.dp=2"], ["parallel.tp=2"],
                                    ["parallel.pp=2", "parallel.pp_schedule=1f1b"],
                                    ["parallel.pp=2", "parallel.pp_schedule=gpipe"],
                                    ["parallel.dp=2", "parallel.dp_replicate=2"]],
                         ids=["dp2", "tp2", "pp2-1f1b", "pp2-gpipe", "hsdp2"])
def test_two_process_layouts_match_single_process(baseline, tmp_path, layout):
    run_train(tmp_path, layout + THREE + ["checkpoint.save_final=false"], nproc=2)
    assert_close(losses(tmp_path), losses(baseline), [1, 2, 3])


def test_dp2_tp2_matches_and_reshards_to_dp4(baseline, tmp_path):
    run_train(tmp_path, ["parallel.dp=2", "parallel.tp=2", "checkpoint.interval=2", "checkpoint.save_final=false"]
              + THREE, nproc=4)
    want = losses(baseline)
    assert_close(losses(tmp_path), want, [1, 2, 3])
    # resume the dp2×tp2 checkpoint of step 2 with a different layout: dp4
    ckpts = sorted((tmp_path / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step_00000002"]
    (tmp_path / "metrics.jsonl").write_text("")
    run_train(tmp_path, ["parallel.dp=4", "checkpoint.save_final=false"] + THREE, nproc=4)
    got = losses(tmp_path)
    assert sorted(got) == [3]  # only step 3 was run again
    assert_close(got, want, [3])


def test_pipeline_checkpoint_resumes_on_one_process(baseline, tmp_path):
    """Each stage saves only its layers under their plain names; one process reads them all back."""
    run_train(tmp_path, ["parallel.pp=2", "checkpoint.interval=2", "checkpoint.save_final=false"] + THREE, nproc=2)
    (tmp_path / "metrics.jsonl").write_text("")
    run_train(tmp_path, ["checkpoint.save_final=false"] + THREE)
    got = losses(tmp_path)
    assert sorted(got) == [3]
    assert_close(got, losses(baseline), [3])


@pytest.mark.parametrize("layout", [["parallel.dp=2", "parallel.pp=2"], ["parallel.tp=2", "parallel.pp=2"]],
                         ids=["dp2xpp2", "tp2xpp2"])
def test_pipeline_composes_with_dp_and_tp(baseline, tmp_path, layout):
    run_train(tmp_path, layout + THREE + ["checkpoint.save_final=false"], nproc=4)
    assert_close(losses(tmp_path), losses(baseline), [1, 2, 3])


def test_bf16_under_fsdp_keeps_fp32_masters_and_tracks_fp32_losses(baseline, tmp_path):
    """The GPU recipe's precision path on CPU: FSDP2 MixedPrecisionPolicy (bf16 compute, fp32 reduce)."""
    from torch.distributed.checkpoint import FileSystemReader

    run_train(tmp_path, ["parallel.dp=2", "train.precision=bf16", "checkpoint.interval=3"] + THREE, nproc=2)
    assert_close(losses(tmp_path), losses(baseline), [1, 2, 3], rel=2e-2)
    assert losses(tmp_path)[1] != losses(baseline)[1]  # bf16 compute really ran
    meta = FileSystemReader(str(tmp_path / "checkpoints" / "step_00000003")).read_metadata()
    dtypes = {md.properties.dtype for key, md in meta.state_dict_metadata.items()
              if key.startswith("model.") and hasattr(md, "properties")}
    assert dtypes == {torch.float32}, dtypes  # the masters (and what resumes) stay fp32
