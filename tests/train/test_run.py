"""In-process runs of the tiny recipe: non-finite steps, rollback, SFT + LoRA, export, plot, config errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from meditron.cli import main as cli_main
from meditron.errors import ConfigError
from meditron.train.config import load_train_config
from meditron.train.loop import Trainer, train
from meditron.train.parallel import cxx_compiler
from train_helpers import TINY, losses

pytestmark = pytest.mark.timeout(240)


def rows(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_non_finite_step_is_skipped_counted_and_logged(tmp_path):
    cfg = load_train_config(TINY, ["train.steps=4", "failures.inject_nan_steps=[3]", "checkpoint.interval=0",
                                   "eval.interval=0", "checkpoint.save_final=false", "log.interval=2"])
    trainer = Trainer(cfg, tmp_path)
    trainer.run()
    lines = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in lines and "Infinity" not in lines  # strict JSON: non-finite values are null
    r = {x["step"]: x for x in rows(tmp_path) if "loss" in x}
    assert sorted(r) == [2, 3, 4]  # step 3 is off the log interval, but a skip is always written
    assert r[3]["skipped"] and r[3]["loss"] is None and r[3]["n_skipped"] == 1
    assert not r[4]["skipped"] and math.isfinite(r[4]["loss"]) and r[4]["n_skipped"] == 1
    assert set(r[2]) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory_gb", "n_rollbacks"}
    assert cli_main(["plot", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0  # null losses are left out


def test_consecutive_non_finite_steps_roll_back_to_the_checkpoint(tmp_path):
    cfg = load_train_config(TINY, ["train.steps=5", "failures.inject_nan_steps=[3,4]",
                                   "failures.max_consecutive_skips=2", "checkpoint.interval=2",
                                   "eval.interval=0", "checkpoint.save_final=false"])
    trainer = Trainer(cfg, tmp_path)
    trainer.run()
    r = {x["step"]: x for x in rows(tmp_path) if "loss" in x}
    assert r[4]["rollback_to"] == 2 and r[4]["n_rollbacks"] == 1 and r[3]["n_rollbacks"] == 0
    assert r[5]["n_skipped"] == 2 and not r[5]["skipped"] and r[5]["n_rollbacks"] == 1
    # no checkpoint to go back to: a one-line error naming the fix
    cfg = load_train_config(TINY, ["train.steps=3", "failures.inject_nan_steps=[1,2]",
                                   "failures.max_consecutive_skips=2", "checkpoint.interval=0"])
    with pytest.raises(Exception, match="no checkpoint to roll back to"):
        Trainer(cfg, tmp_path / "b").run()
    # rolling back again and again does not help: the run stops after failures.max_rollbacks
    cfg = load_train_config(TINY, ["train.steps=8", "failures.inject_nan_steps=[3,4,5,6,7]",
                                   "failures.max_consecutive_skips=2", "failures.max_rollbacks=1",
                                   "checkpoint.interval=2", "eval.interval=0"])
    with pytest.raises(Exception, match="after 1 rollbacks in a row .* at step 6"):
        Trainer(cfg, tmp_path / "c").run()
    last = rows(tmp_path / "c")[-1]
    assert last["step"] == 6 and last["skipped"]  # the step that stopped the run is on record
    # rollbacks with checkpoint.interval good steps between them are separate streaks: the run goes on
    cfg = load_train_config(TINY, ["train.steps=10", "failures.inject_nan_steps=[3,4,9,10]",
                                   "failures.max_consecutive_skips=2", "failures.max_rollbacks=1",
                                   "checkpoint.interval=2", "eval.interval=0"])
    Trainer(cfg, tmp_path / "d").run()
    assert [x["rollback_to"] for x in rows(tmp_path / "d") if "rollback_to" in x] == [2, 8]
    # no periodic checkpoint is written while steps fail: one due at 6 (holding step 4's weights, which
    # then failed at 5) would have been the rollback's target; the rollback goes back to step 3 instead
    cfg = load_train_config(TINY, ["train.steps=11", "failures.inject_nan_steps=[5,6,7,8,9]",
                                   "checkpoint.interval=3", "eval.interval=0", "checkpoint.keep=5"])
    Trainer(cfg, tmp_path / "e").run()
    assert [x["rollback_to"] for x in rows(tmp_path / "e") if "rollback_to" in x] == [3]
    saved = sorted(p.name for p in (tmp_path / "e" / "checkpoints").iterdir())
    assert saved == ["step_00000003", "step_00000010", "step_00000011"]   # 6's and 9's save taken at 10


def test_export_loads_in_transformers_with_the_trained_logits(baseline, tmp_path):
    from transformers import AutoModelForCausalLM

    from meditron.train.checkpoint import load_checkpoint_model

    assert cli_main(["export", str(baseline), str(tmp_path / "hf")]) == 0
    ours, meta, ckpt = load_checkpoint_model(baseline)
    assert ckpt.name == "step_00000010"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokens = torch.randint(8, 200, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours(tokens)
        b = hf(tokens).logits
    assert (a - b).abs().max().item() <= 1e-4
    # and they are the trained weights, not the initial ones
    from meditron.model.config import preset
    from meditron.model.llama import Transformer

    init = Transformer(preset("tiny-gqa", max_seq_len=256))
    init.init_weights(0)
    assert not torch.allclose(init.layers["0"].attention.wq.weight, ours.layers["0"].attention.wq.weight)


def test_sft_with_lora_trains_adapters_only_and_exports_merged(tmp_path):
    cfg = load_train_config(TINY, ["data.mode=sft", "train.steps=3", "optim.lr=1e-2", "lora.enabled=true",
                                   "lora.r=4", "eval.interval=0"])
    trainer = Trainer(cfg, tmp_path)
    n_adapter = sum(p.numel() for n, p in trainer.pm.model.named_parameters() if "lora_" in n)
    assert trainer.adapter_params == n_adapter > 0  # MFU counts 4 FLOPs per frozen weight, 6 per adapter weight
    before = {n: p.detach().clone() for n, p in trainer.pm.model.named_parameters()}
    trainer.run()
    after = dict(trainer.pm.model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert changed and all("lora_" in n for n in changed)
    r = rows(tmp_path)
    assert all(math.isfinite(x["loss"]) for x in r if "loss" in x)
    assert cli_main(["export", str(tmp_path), str(tmp_path / "hf")]) == 0
    from meditron.model.weights import load_hf_folder

    merged = load_hf_folder(tmp_path / "hf")
    base = trainer.pm.model.layers["0"].attention.wq.base_layer.weight
    assert not torch.allclose(merged.layers["0"].attention.wq.weight, base)  # the adapter was folded in


def test_sft_full_finetune_loss_counts_answer_tokens_only(tmp_path):
    cfg = load_train_config(TINY, ["data.mode=sft", "train.steps=2", "eval.interval=0", "checkpoint.save_final=false"])
    trainer = Trainer(cfg, tmp_path)
    batches, scale, n_tokens, attention_len = trainer._micro_batches(0)
    n_answer = sum(int((t != -100).sum()) for _, t in batches)
    assert scale == pytest.approx(1.0 / n_answer)
    lengths = [len(trainer.train_set.samples[trainer.order[i]].ids) - 1 for i in range(8)]
    assert n_tokens == sum(lengths) and attention_len == pytest.approx(sum(n * n for n in lengths) / sum(lengths))
    assert attention_len < cfg.train.seq_len  # MFU counts attention at the samples' lengths, not the padded maximum
    for tok, tgt in batches:
        assert tok.shape[1] % 16 == 0
    trainer.run()
    assert len(losses(tmp_path)) == 2


def test_validation_rows_tensorboard_and_only_the_last_checkpoints_kept(baseline, tmp_path):
    valid = {x["step"]: x for x in rows(baseline) if "valid/arith/loss" in x}
    assert sorted(valid) == [5, 10]  # eval.interval=5, one loss and perplexity per source
    for r in valid.values():
        for source in ("arith", "motif"):
            assert r[f"valid/{source}/ppl"] == pytest.approx(math.exp(r[f"valid/{source}/loss"]))
    train(load_train_config(TINY, ["train.steps=4", "checkpoint.interval=1", "checkpoint.keep=2",
                                   "eval.interval=0", "log.tensorboard=true"]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000003", "step_00000004"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]


def test_validation_is_recorded_off_the_log_interval_and_names_must_not_collide(baseline, tmp_path):
    train(load_train_config(TINY, ["train.steps=4", "log.interval=2", "eval.interval=3",
                                   "checkpoint.interval=0", "checkpoint.save_final=false"]), tmp_path / "a")
    logged = {x["step"]: x for x in rows(tmp_path / "a")}
    assert sorted(logged) == [2, 3, 4] and "valid/arith/loss" in logged[3] and "valid/arith/loss" in logged[4]
    # a data.valid set named like a source whose held-out split is evaluated would silently replace it
    other = {"name": "arith", "path": str(baseline / "data" / "synthetic-motif")}
    with pytest.raises(ConfigError, match="'arith' is already the held-out split of source 'arith'"):
        train(load_train_config(TINY, ["train.steps=1", f"data.valid=[{json.dumps(other)}]"]), tmp_path / "b")


def test_plot_and_bad_config_key(baseline, tmp_path, capsys):
    assert cli_main(["plot", str(baseline), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert cli_main(["train", str(TINY), "--set", "optim.lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert cli_main(["train", str(TINY), "--out", str(tmp_path / "a-file" / "run")]) == 2
    assert f"Not a directory: {tmp_path / 'a-file' / 'run'}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.global_batch"):
        load_train_config(TINY, ["parallel.dp=3"])
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node=2"):
        train(load_train_config(TINY, ["parallel.tp=2"]), tmp_path / "y")
    with pytest.raises(ConfigError, match="torchrun --nnodes=8 --nproc_per_node=8 .* on each node"):
        train(load_train_config(TINY, ["parallel.dp=16", "parallel.tp=4", "train.global_batch=16",
                                       "train.micro_batch=1"]), tmp_path / "z")
    with pytest.raises(ConfigError, match="12 processes over several nodes .* K × N = 12"):
        train(load_train_config(TINY, ["parallel.dp=12", "train.global_batch=12", "train.micro_batch=1"]),
              tmp_path / "w")


def test_finetune_starts_from_a_pretraining_checkpoint(baseline, tmp_path):
    from meditron.train.checkpoint import load_checkpoint_model

    cfg = load_train_config(TINY, ["data.mode=sft", "train.steps=1", f"checkpoint.init_from={baseline}",
                                   "eval.interval=0", "checkpoint.save_final=false"])
    trainer = Trainer(cfg, tmp_path)
    trained, _, _ = load_checkpoint_model(baseline)
    start = dict(trainer.pm.model.named_parameters())
    for name, p in trained.named_parameters():
        assert torch.equal(p, start[name].detach()), name
    assert trainer.step == 0


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_checkpointing_keeps_the_losses(baseline, tmp_path, mode):
    out = tmp_path / mode
    train(load_train_config(TINY, ["train.steps=2", "optim.schedule_steps=10", f"parallel.activation_checkpoint={mode}",
                                   "checkpoint.save_final=false", "eval.interval=0"]), out)
    got, want = losses(out), losses(baseline)
    for s in (1, 2):
        assert got[s] == pytest.approx(want[s], rel=1e-6)


@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
@pytest.mark.parametrize("mode", ["none", "selective"])
def test_compiled_blocks_keep_the_losses(baseline, tmp_path, mode):
    out = tmp_path / mode
    trainer = Trainer(load_train_config(TINY, ["train.steps=2", "optim.schedule_steps=10", "train.compile=true",
                                               f"parallel.activation_checkpoint={mode}", "checkpoint.save_final=false",
                                               "eval.interval=0"]), out)
    trainer.run()
    trainer.close()
    assert all(block._compiled_call_impl is not None for block in trainer.pm.model.layers.values())
    got, want = losses(out), losses(baseline)
    for s in (1, 2):  # inductor fuses elementwise work, so rounding may differ in the last bits
        assert got[s] == pytest.approx(want[s], rel=1e-5)


def test_compile_without_a_compiler_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr("meditron.train.parallel.shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="train.compile"):
        train(load_train_config(TINY, ["train.steps=1", "train.compile=true", "eval.interval=0"]), tmp_path)


def test_resume_refuses_what_would_corrupt_the_run(baseline, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    with pytest.raises(ConfigError, match="checkpoint.resume=false"):  # would mix two runs' checkpoints
        Trainer(load_train_config(TINY, ["checkpoint.resume=false"]), run)
    with pytest.raises(ConfigError, match="train.global_batch: .* read 80 samples in 10 steps"):
        Trainer(load_train_config(TINY, ["train.global_batch=4", "train.steps=20"]), run)
    for override, message in [("train.seq_len=32", "train.seq_len: .* with 64, this config has 32"),
                              ("data.seed=7", "data.seed: .* with 1234, this config has 7"),
                              ("data.valid_fraction=0.1", "data.valid_fraction: .* checkpoint.init_from=")]:
        with pytest.raises(ConfigError, match=message):
            Trainer(load_train_config(TINY, [override, "train.steps=20"]), run)
    longer = Trainer(load_train_config(TINY, ["train.steps=20"]), run)  # a longer run of the same data resumes
    assert longer.step == 10
    longer.close()


def test_resume_follows_a_moved_corpus_but_refuses_another_blend(tmp_path):
    from meditron.train.data import make_synthetic_shards

    def trainer(folder, weights, *more):
        sources = ", ".join(f"{{path: {folder}/synthetic-{n}, weight: {w}}}" for n, w in zip(("arith", "motif"), weights))
        return Trainer(load_train_config(TINY, ["data.synthetic=false", f"data.sources=[{sources}]", "eval.interval=0",
                                                "checkpoint.interval=0", *more]), tmp_path / "run")

    make_synthetic_shards(tmp_path / "corpus", 512, 64, seed=1)
    first = trainer(tmp_path / "corpus", (7, 3), "train.steps=2")
    first.run()
    first.close()
    (tmp_path / "corpus").rename(tmp_path / "moved")
    again = trainer(tmp_path / "moved", (0.7, 0.3), "train.steps=4")   # same names and shares
    assert again.step == 2
    again.close()
    with pytest.raises(ConfigError, match=r"data.sources: .*this config has \[\('synthetic-arith', 0.5\)"):
        trainer(tmp_path / "moved", (1, 1), "train.steps=4")
    with pytest.raises(ConfigError, match="data.append_eod: .* with None, this config has False"):
        trainer(tmp_path / "moved", (7, 3), "train.steps=4", "data.append_eod=false")


def test_out_of_memory_names_the_knobs(tmp_path, monkeypatch):
    trainer = Trainer(load_train_config(TINY, ["train.steps=1", "eval.interval=0"]), tmp_path)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.pm, "forward_backward", oom)
    with pytest.raises(Exception, match="out of memory in training at train.micro_batch=2.*lower train.micro_batch"):
        trainer.train_step()
    monkeypatch.setattr(trainer.pm, "evaluate", oom)
    with pytest.raises(Exception, match="out of memory in validation"):
        trainer.validate()
    monkeypatch.setattr(trainer.pm, "forward_backward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="^boom$"):  # other errors pass through unchanged
        trainer.train_step()


def test_bf16_autocast_keeps_fp32_parameters(baseline, tmp_path):
    trainer = Trainer(load_train_config(TINY, ["train.steps=2", "optim.schedule_steps=10", "train.precision=bf16",
                                               "checkpoint.save_final=false", "eval.interval=0"]), tmp_path)
    assert trainer.pm.autocast
    trainer.run()
    assert {p.dtype for p in trainer.pm.model.parameters()} == {torch.float32}
    got, want = losses(tmp_path), losses(baseline)
    for s in (1, 2):
        assert got[s] == pytest.approx(want[s], rel=2e-2) and got[s] != want[s]
