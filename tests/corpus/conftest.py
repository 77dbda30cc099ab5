"""Fixtures for the corpus tests: a tiny stand-in tokenizer and small synthetic source files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus_testdata import paragraph, sentence, write_jsonl_gz


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE (a few hundred tokens) saved as a HF tokenizer folder with </s> as EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["The patient presented with fever and cough.", "Guidelines recommend screening adults.",
              "Blood pressure was measured twice daily.", "Results were significant (p<0.05)."] * 20
    tok.train_from_iterator(corpus, trainer)
    folder = tmp_path_factory.mktemp("tiny_tok")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder


@pytest.fixture
def synthetic_corpus(tmp_path) -> Path:
    """Four small sources (guidelines, abstracts, textbook, replay) with a few planted duplicates."""
    import random

    rng = random.Random(7)
    root = tmp_path / "corpus"
    guide = [{"id": f"g{i}", "source": "CDC", "title": f"Guideline {i}",
              "text": f"# Guideline {i}\n\n" + paragraph(rng) + "\n\n## Treatment\n\n* " + sentence(rng)} for i in range(30)]
    abstracts = [{"id": f"pmid:{i}", "text": f"Title {i}.\n" + paragraph(rng, 5)} for i in range(60)]
    abstracts.append({"id": "pmid:dup", "text": abstracts[3]["text"]})          # exact duplicate
    books = [{"id": f"b{i}", "source": "book", "text": paragraph(rng, 20)} for i in range(20)]
    replay = [{"id": f"w{i}", "source": "wiki", "text": paragraph(rng, 6)} for i in range(80)]
    write_jsonl_gz(root / "guidelines" / "g.jsonl.gz", guide)
    write_jsonl_gz(root / "abstracts" / "a.jsonl.gz", abstracts)
    write_jsonl_gz(root / "books" / "b.jsonl.gz", books)
    write_jsonl_gz(root / "replay" / "r.jsonl.gz", replay)
    return root
