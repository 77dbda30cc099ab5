"""Generation: parity with transformers' greedy generate, batching, cache, sampling controls."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from meditron.cli import main
from meditron.infer.cache import KVCache
from meditron.infer.generate import Generator, SamplingParams, left_pad, prefill_mask

PROMPTS = [
    "What is the first-line treatment for uncomplicated hypertension?",
    "List three symptoms of influenza:",
    "The mitochondria is",
    "Question: Which vitamin deficiency causes scurvy?\nAnswer:",
    "Patients with type 2 diabetes should",
]


def test_cli_greedy_generation_equals_transformers(smollm2, smollm2_hf, capsys):
    """`meditron generate --temperature 0 --max-new-tokens 48` yields transformers' greedy tokens."""
    _, tok = smollm2
    for prompt in PROMPTS:
        assert main(["generate", "--model", "smollm2-135m", "--temperature", "0", "--max-new-tokens", "48",
                     "--show-tokens", prompt]) == 0
        ours = [int(t) for t in capsys.readouterr().out.split("tokens:")[-1].split()]
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            out = smollm2_hf.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=tok.eos_id,
                                      pad_token_id=tok.pad_id)
        theirs = out[0, ids.shape[1]:].tolist()
        if theirs and theirs[-1] == tok.eos_id:
            theirs = theirs[:-1]
        assert ours == theirs, prompt


def test_batched_prompts_of_different_lengths_equal_one_by_one(smollm2):
    gen = Generator(*smollm2)
    params = SamplingParams(max_new_tokens=12)
    batch = gen.generate(PROMPTS, params)
    assert [b.token_ids for b in batch] == [gen.generate([p], params)[0].token_ids for p in PROMPTS]


def test_cached_decoding_matches_full_forward_with_left_padding():
    model = tiny_model("tiny-gqa")
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    ids, valid = left_pad(seqs, pad_id=0)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    cache = KVCache(model.config, 2, 16)
    with torch.no_grad():
        logits = model(ids, positions=positions, mask=prefill_mask(valid), cache=cache)
        cache.advance(ids.shape[1])
        step = model(torch.tensor([[3], [4]]), positions=positions[:, -1:] + 1,
                     mask=torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], 1)[:, None, None], cache=cache)
        for row, seq in enumerate(seqs):
            full = model(torch.tensor([seq + [3 + row]]))
            assert torch.allclose(logits[row, -1], full[0, -2], atol=1e-5)
            assert torch.allclose(step[row, -1], full[0, -1], atol=1e-5)


def test_logprobs_are_the_models_log_probabilities(smollm2):
    model, tok = smollm2
    out = Generator(model, tok).generate(["The heart has"], SamplingParams(max_new_tokens=6))[0]
    ids = torch.tensor([tok.encode("The heart has") + out.token_ids])
    with torch.no_grad():
        lp = model(ids).log_softmax(-1)[0]
    n = len(tok.encode("The heart has"))
    expected = [lp[n - 1 + i, t].item() for i, t in enumerate(out.token_ids)]
    assert out.logprobs == pytest.approx(expected, abs=1e-4)


def test_seeded_sampling_is_reproducible_and_filters_work(smollm2):
    gen = Generator(*smollm2)
    sampled = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)
    a, b = gen.generate(["Aspirin is"], sampled)[0], gen.generate(["Aspirin is"], sampled)[0]
    assert a.token_ids == b.token_ids
    other = gen.generate(["Aspirin is"], SamplingParams(max_new_tokens=16, temperature=0.9, seed=8))[0]
    assert other.token_ids != a.token_ids
    greedy = gen.generate(["Aspirin is"], SamplingParams(max_new_tokens=16))[0]
    top1 = gen.generate(["Aspirin is"], SamplingParams(max_new_tokens=16, temperature=1.5, top_k=1, seed=3))[0]
    assert top1.token_ids == greedy.token_ids


def test_stop_strings_and_penalties(smollm2):
    gen = Generator(*smollm2)
    prompt = "Count: one, two, three, four, five,"
    free = gen.generate([prompt], SamplingParams(max_new_tokens=30))[0]
    assert "," in free.text
    stopped = gen.generate([prompt], SamplingParams(max_new_tokens=30, stop=[","]))[0]
    assert stopped.finish_reason == "stop" and "," not in stopped.text and free.text.startswith(stopped.text)
    penalised = gen.generate([prompt], SamplingParams(max_new_tokens=30, frequency_penalty=100.0))[0]
    assert len(set(penalised.token_ids)) == len(penalised.token_ids)  # a huge penalty forbids any repeat
    presence = gen.generate([prompt], SamplingParams(max_new_tokens=30, presence_penalty=100.0))[0]
    assert len(set(presence.token_ids)) == len(presence.token_ids)


def test_stream_yields_the_same_text_as_generate(smollm2):
    gen = Generator(*smollm2)
    params = SamplingParams(max_new_tokens=20)
    assert "".join(gen.stream("Insulin is", params)) == gen.generate(["Insulin is"], params)[0].text
