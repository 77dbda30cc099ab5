"""Tokenizers: SentencePiece (Llama-2, offline), MEDITRON's added tokens, chat templates."""

from __future__ import annotations

import pytest

from meditron.errors import ModelError
from meditron.model.tokenizer import (CHAT_TOKENS, MEGATRON_SPECIALS, S2ORC_TAGS, add_chat_tokens,
                                      add_meditron_tokens, load_tokenizer)


def test_llama2_sentencepiece_tokenizer_matches_sentencepiece_itself():
    import sentencepiece as spm

    from meditron.model.tokenizer import package_file

    tok = load_tokenizer("llama-2")
    sp = spm.SentencePieceProcessor(model_file=str(package_file("mistral_common", "data", "tokenizer.model.v1")))
    assert tok.vocab_size == 32000 and tok.bos_id == 1 and tok.eos_id == 2 and tok.add_bos
    for text in ["Hello world", "The patient's HbA1c was 7.2% (normal <5.7).", "  leading spaces\nnew line", "ünïcödé 🩺"]:
        assert tok.encode(text, add_bos=False) == sp.encode(text)
        assert tok.decode(tok.encode(text)) == text


def test_meditron_tokens_get_megatron_ids():
    """MEDITRON.md §3.4: ids 32000-32004 Megatron specials, then 12 S2ORC tags: 32,017; EOD = 32002."""
    tok = add_meditron_tokens(load_tokenizer("llama-2"))
    assert tok.vocab_size == 32017
    assert [tok.token_to_id(t) for t in MEGATRON_SPECIALS] == list(range(32000, 32005))
    assert [tok.token_to_id(t) for t in S2ORC_TAGS] == list(range(32005, 32017))
    assert tok.eod_id == 32002
    ids = tok.encode("see [bib_ref] Smith et al. [/bib_ref] and [table] x [/table]", add_bos=False)
    assert 32005 in ids and 32006 in ids and 32013 in ids and 32014 in ids
    add_chat_tokens(tok)
    assert [tok.token_to_id(t) for t in CHAT_TOKENS] == [32017, 32018] and tok.vocab_size == 32019
    assert add_meditron_tokens(tok).vocab_size == 32019  # idempotent


def test_saved_tokenizer_reloads_identically(tmp_path):
    tok = add_meditron_tokens(load_tokenizer("llama-2"))
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "A [formula] x^2 [/formula] test"
    assert again.encode(text) == tok.encode(text) and again.vocab_size == 32017 and again.eod_id == 32002


def test_smollm2_tokenizer_and_chat_template(smollm2):
    _, tok = smollm2
    assert tok.vocab_size == 49152 and not tok.add_bos
    assert tok.encode("2024") == [tok.token_to_id(d) for d in "2024"]  # SmolLM splits digits
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer(tmp_path)


def test_embedded_model_alias_names_its_tokenizer(smollm2):
    """`tokenizer: smollm2-135m` in a corpus config gives the tokenizer the trained model will use."""
    _, model_tok = smollm2
    tok = load_tokenizer("smollm2-135m")
    text = "Metformin 500 mg twice daily; HbA1c 7.2%."
    assert tok.vocab_size == model_tok.vocab_size and tok.encode(text) == model_tok.encode(text)
    with pytest.raises(ModelError, match="embedded model \\(smollm2-135m\\)"):
        load_tokenizer("smollm2-136m")
