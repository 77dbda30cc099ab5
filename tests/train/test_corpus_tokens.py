"""Pretraining on shards the corpus builder made: the model takes the corpus's vocabulary and EOD."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from meditron.corpus.shards import IndexedDatasetWriter
from meditron.errors import ConfigError, DataError
from meditron.train.config import load_train_config
from meditron.train.loop import Trainer
from train_helpers import TINY

pytestmark = pytest.mark.timeout(240)

LLAMA2_EOD, MEDITRON_VOCAB = 32002, 32017  # MEDITRON.md §4.1: Llama-2 + 17 tokens, <EOD> = 32002


def write_corpus(folder, top_id: int, eod: int, card: dict | None):
    """A Megatron train shard of 40 documents using ids up to `top_id`, each ending with `eod`."""
    rng = np.random.default_rng(0)
    with IndexedDatasetWriter(folder / "train", np.uint16) as w:
        for _ in range(40):
            doc = rng.integers(3, min(top_id, 32000), rng.integers(20, 90)).tolist()
            w.add_document(doc + [top_id, eod])
    if card is not None:
        (folder / "datacard.json").write_text(json.dumps({"tokenizer": card}))
    return folder / "train"


def config(prefix, *extra):
    return load_train_config(TINY, ["data.synthetic=false", f"data.sources=[{{name: gap, path: {prefix}}}]",
                                    "data.valid_fraction=0.1", "train.steps=1", "eval.interval=0",
                                    "checkpoint.save_final=false", *extra])


def test_meditron_corpus_grows_llama2_vocab_and_splits_on_its_eod(tmp_path):
    card = {"ref": "llama-2", "meditron_tokens": True, "vocab_size": MEDITRON_VOCAB, "eod_id": LLAMA2_EOD}
    prefix = write_corpus(tmp_path / "corpus", top_id=MEDITRON_VOCAB - 1, eod=LLAMA2_EOD, card=card)
    cfg = config(prefix, "model.overrides={max_seq_len: 256, vocab_size: 32000}", "model.tokenizer=llama-2")
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.model_config.vocab_size == MEDITRON_VOCAB
    assert trainer.pm.model.tok_embeddings.weight.shape[0] == MEDITRON_VOCAB
    assert trainer._eod() == LLAMA2_EOD and trainer.tokenizer.eod_id == LLAMA2_EOD
    assert all(not p.append_eod for p in trainer.packed)  # documents already end with <EOD>: not doubled
    row = trainer.train_step()
    assert math.isfinite(row["loss"])
    from meditron.model.tokenizer import load_tokenizer

    assert load_tokenizer(tmp_path / "run" / "tokenizer").vocab_size == MEDITRON_VOCAB  # export writes this one


def test_corpus_vocab_the_model_tokenizer_cannot_reach_names_the_key(tmp_path):
    card = {"ref": "llama-2", "meditron_tokens": True, "vocab_size": MEDITRON_VOCAB, "eod_id": LLAMA2_EOD}
    prefix = write_corpus(tmp_path / "corpus", top_id=MEDITRON_VOCAB - 1, eod=LLAMA2_EOD, card=card)
    with pytest.raises(ConfigError, match="model.tokenizer"):
        Trainer(config(prefix, "model.overrides={max_seq_len: 256, vocab_size: 32000}"), tmp_path / "run")


def test_ids_beyond_the_vocabulary_without_a_card_are_a_data_error(tmp_path):
    prefix = write_corpus(tmp_path / "corpus", top_id=20000, eod=2, card=None)
    trainer = Trainer(config(prefix), tmp_path / "run")  # tiny-gqa: 512 ids
    with pytest.raises(DataError, match=r"token id \d+ but the model's vocabulary has 512"):
        trainer.train_step()


def test_the_cards_eod_wins_over_the_models_eos(tmp_path):
    """A corpus whose documents end with id 7: without the card the model's EOS (2) would be appended."""
    card = {"ref": "elsewhere", "meditron_tokens": False, "vocab_size": 512, "eod_id": 7}
    prefix = write_corpus(tmp_path / "corpus", top_id=500, eod=7, card=card)
    trainer = Trainer(config(prefix, "model.tokenizer=null", "model.overrides={max_seq_len: 256, eos_token_id: 2}"),
                      tmp_path / "run")
    assert trainer._eod() == 7 and all(not p.append_eod for p in trainer.packed)
    with pytest.raises(ConfigError, match="model.tokenizer"):  # a known tokenizer of another size is refused
        Trainer(config(prefix, "model.tokenizer=llama-2"), tmp_path / "run2")
