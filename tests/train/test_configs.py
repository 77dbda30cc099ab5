"""Every shipped training config loads and validates, and the MEDITRON recipes hold the paper's numbers."""

from __future__ import annotations

import pytest

from meditron.errors import ConfigError
from meditron.train.config import load_train_config
from train_helpers import REPO, TINY

TRAIN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("corpus"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    cfg = load_train_config(path)
    assert cfg.optim.betas == [0.9, 0.95] or path.name.startswith("tiny")


def test_recipes_mirror_the_paper():
    """MEDITRON.md §4.1–4.2: parallel degrees, batches, sequence, LR schedule, SFT epochs and warmup."""
    seven = load_train_config(REPO / "configs" / "meditron-7b.yaml")
    assert (seven.parallel.dp, seven.parallel.tp, seven.parallel.pp) == (16, 4, 1)
    assert (seven.train.micro_batch, seven.train.global_batch, seven.train.seq_len) == (10, 1600, 2048)
    assert (seven.optim.lr, seven.optim.min_lr, seven.optim.warmup_steps, seven.optim.schedule_factor) == (
        3e-4, 1e-6, 2000, 2.0)
    seventy = load_train_config(REPO / "configs" / "meditron-70b.yaml")
    assert (seventy.parallel.dp, seventy.parallel.tp, seventy.parallel.pp) == (2, 8, 8)
    assert (seventy.train.micro_batch, seventy.train.global_batch, seventy.train.seq_len) == (2, 512, 4096)
    assert seventy.optim.lr == 1.5e-4
    sft = load_train_config(REPO / "configs" / "meditron-7b-sft.yaml")
    assert sft.data.mode == "sft" and sft.data.pad_multiple == 16
    assert (sft.train.epochs, sft.train.global_batch, sft.optim.lr, sft.optim.min_lr) == (3.0, 64, 2e-5, 2e-6)
    assert sft.optim.warmup_steps is None and sft.optim.warmup_fraction == 0.1 and sft.optim.schedule_factor == 1.0
    for cfg in (seven, seventy, sft):
        assert (cfg.optim.eps, cfg.optim.weight_decay, cfg.optim.clip) == (1e-5, 0.1, 1.0)


@pytest.mark.parametrize("override,key", [
    ("data.pad_multiple=0", "data.pad_multiple"),
    ("train.seq_len=0", "train.seq_len"),
    ("optim.lr=-1e-4", "optim.lr"),
    ("checkpoint.keep=0", "checkpoint.keep"),
    ("log.interval=0", "log.interval"),
    ("optim.min_lr=1.0", "optim.min_lr"),
    ("train.epochs=0", "train.epochs"),
])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_train_config(TINY, [override])
