"""`meditron export`: which output folders it may replace, the EOS of fine-tuned exports, LoRA merging."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from meditron.cli import main as cli_main
from meditron.errors import ModelError
from meditron.train.config import load_train_config
from meditron.train.loop import Trainer, train
from train_helpers import TINY

pytestmark = pytest.mark.timeout(240)


def _hf_eos(folder):
    """(config.json eos, generation_config.json eos, tokenizer eos token) of an exported folder."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(folder)
    return (AutoConfig.from_pretrained(folder).eos_token_id, GenerationConfig.from_pretrained(folder).eos_token_id,
            tok.eos_token, tok.convert_tokens_to_ids("<|im_end|>"))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A 1-step ChatML fine-tune with the Llama-2 tokenizer (<|im_start|>/<|im_end|> added, vocab resized)."""
    out = tmp_path_factory.mktemp("sft")
    train(load_train_config(TINY, ["data.mode=sft", "train.steps=1", "model.tokenizer=llama-2",
                                   "eval.interval=0"]), out)
    return out


# -- where export may write ------------------------------------------------------------------------
def test_export_refuses_folders_it_would_destroy(baseline, tmp_path, capsys):
    run = shutil.copytree(baseline, tmp_path / "run")  # a copy: a regression must not delete the shared run
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    for target, why in [(run, "it holds"), (run / "checkpoints" / "step_00000010", "it is"),
                        (run / "checkpoints" / "step_00000010" / "hf", "it is inside"),
                        (tmp_path, "it holds"), (notes, "no config.json")]:
        if why == "it is inside":
            target.mkdir()
            (target / "x").write_text("x")
        assert cli_main(["export", str(run), str(target)]) == 2, target
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(target) in err and why in err, err
    assert (run / "checkpoints" / "step_00000010" / "train_state.json").is_file()
    assert (run / "metrics.jsonl").is_file() and (notes / "keep.txt").read_text() == "mine"


def test_export_replaces_a_previous_export_and_fills_an_empty_folder(baseline, tmp_path, capsys):
    hf = tmp_path / "hf"
    hf.mkdir()
    assert cli_main(["export", str(baseline), str(hf)]) == 0
    (hf / "stale.safetensors").write_text("old")
    assert cli_main(["export", str(baseline / "checkpoints" / "step_00000005"), str(hf)]) == 0
    assert (hf / "config.json").is_file() and not (hf / "stale.safetensors").exists()
    assert capsys.readouterr().out.splitlines() == [f"wrote {hf}"] * 2


# -- EOS of fine-tuned exports ---------------------------------------------------------------------
def test_sft_export_ends_generation_at_im_end(sft_run, tmp_path):
    assert cli_main(["export", str(sft_run), str(tmp_path / "hf")]) == 0
    config_eos, gen_eos, tok_eos, im_end = _hf_eos(tmp_path / "hf")
    assert im_end == 32001 and (config_eos, gen_eos, tok_eos) == (im_end, im_end, "<|im_end|>")


def test_pretraining_exports_keep_the_model_eos(sft_run, baseline, tmp_path):
    run = shutil.copytree(sft_run, tmp_path / "run")
    for meta_file in run.glob("checkpoints/*/meta.json"):  # the same run, as if it had been pretraining
        meta = json.loads(meta_file.read_text())
        meta["config"]["data"]["mode"] = "pretrain"
        meta_file.write_text(json.dumps(meta))
    assert cli_main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert _hf_eos(tmp_path / "hf")[:3] == (2, 2, "</s>")
    assert cli_main(["export", str(baseline), str(tmp_path / "base")]) == 0
    assert json.loads((tmp_path / "base" / "config.json").read_text())["eos_token_id"] == 2


# -- LoRA merging ----------------------------------------------------------------------------------
def test_lora_export_has_the_logits_of_the_trained_adapters(tmp_path):
    from meditron.model.weights import load_hf_folder

    cfg = load_train_config(TINY, ["data.mode=sft", "train.steps=3", "optim.lr=1e-2", "lora.enabled=true",
                                   "lora.r=4", "eval.interval=0"])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    assert cli_main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    merged = load_hf_folder(tmp_path / "hf")
    wrapped = trainer.pm.model.eval()
    assert any("lora_" in n for n, _ in wrapped.named_parameters())
    tokens = torch.randint(5, 261, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (merged(tokens) - wrapped(tokens)).abs().max().item() <= 1e-4


def test_lora_merge_refuses_weights_that_do_not_fit_by_name():
    from meditron.model.config import preset
    from meditron.model.llama import Transformer
    from meditron.train.lora import inject_lora, merge_lora

    config = preset("tiny-gqa")
    model = inject_lora(Transformer(config), {"r": 2, "alpha": 4, "dropout": 0.0, "targets": ["wq", "wv"]})
    with pytest.raises(ModelError, match=r"first: missing layers\.4\."):
        merge_lora(model, config.replace(n_layers=5))  # a fifth layer would be exported at random init
