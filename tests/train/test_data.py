"""Packed windows, blending, resumable order, and the SFT loss mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meditron.corpus.shards import IndexedDataset, IndexedDatasetWriter
from meditron.errors import DataError
from meditron.train.data import (
    IGNORE,
    BlendedDataset,
    ByteTokenizer,
    EpochOrder,
    PackedSource,
    SFTDataset,
    chatml,
    rank_slice,
)


def shard(tmp_path, name, docs):
    with IndexedDatasetWriter(tmp_path / name, np.uint16) as w:
        for d in docs:
            w.add_document(d)
    return IndexedDataset(tmp_path / name)


def test_windows_cover_the_eod_joined_stream(tmp_path):
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
    ds = shard(tmp_path, "a", docs)
    src = PackedSource("a", ds, np.arange(3), seq_len=4, eod=2, append_eod=None, seed=0, shuffle=False)
    stream = [10, 11, 12, 2, 20, 21, 2, 30, 31, 32, 33, 2]
    assert src.append_eod and len(src) == (len(stream) - 1) // 4
    for k in range(len(src)):
        assert src.window(k).tolist() == stream[k * 4: k * 4 + 5]  # neighbours share one token


def test_documents_already_ending_with_eod_are_not_doubled(tmp_path):
    ds = shard(tmp_path, "b", [[5, 6, 2], [7, 2]])
    src = PackedSource("b", ds, np.arange(2), seq_len=2, eod=2, append_eod=None, seed=0, shuffle=False)
    assert not src.append_eod and src.window(0).tolist() == [5, 6, 2]


def test_shuffled_order_is_a_function_of_seed_and_epoch(tmp_path):
    ds = shard(tmp_path, "c", [list(range(8 + i, 20 + i)) for i in range(30)])
    a = PackedSource("c", ds, np.arange(30), 8, 2, None, seed=3)
    b = PackedSource("c", ds, np.arange(30), 8, 2, None, seed=3)
    c = PackedSource("c", ds, np.arange(30), 8, 2, None, seed=4)
    n = len(a)
    assert all((a.window(i) == b.window(i)).all() for i in range(0, 2 * n, 7))  # fresh object: same windows
    assert any((a.window(i) != c.window(i)).any() for i in range(n))
    assert any((a.window(i) != a.window(i + n)).any() for i in range(n))  # epoch 2 is reshuffled


def test_too_small_source_names_the_fix(tmp_path):
    ds = shard(tmp_path, "d", [[5, 6]])
    with pytest.raises(DataError, match="train.seq_len"):
        PackedSource("d", ds, np.arange(1), 64, 2, None, 0)


def test_blend_follows_weights_in_every_prefix(tmp_path):
    ds1 = shard(tmp_path, "x", [[3] * 50] * 20)
    ds2 = shard(tmp_path, "y", [[4] * 50] * 20)
    s1 = PackedSource("x", ds1, np.arange(20), 16, 2, None, 0)
    s2 = PackedSource("y", ds2, np.arange(20), 16, 2, None, 0)
    blend = BlendedDataset([s1, s2], [0.75, 0.25], 400)
    for prefix in (4, 40, 400):
        share = (blend.src[:prefix] == 0).mean()
        assert abs(share - 0.75) <= 1.0 / prefix + 1e-9
    tok, tgt = blend.batch(range(8))
    assert tok.shape == (8, 16) and (tok[:, 1:] == tgt[:, :-1]).all()
    # within a source, windows are taken in order 0, 1, 2, …
    assert blend.idx[blend.src == 1][:5].tolist() == [0, 1, 2, 3, 4]


def test_rank_slices_partition_the_global_batch():
    parts = [list(rank_slice(3, 8, r, 4)) for r in range(4)]
    assert sum(parts, []) == list(range(24, 32))
    order = EpochOrder(10, seed=1)
    assert sorted(order[i] for i in range(10)) == list(range(10))
    assert sorted(order[i] for i in range(10, 20)) == list(range(10))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def masked_targets(tokens, targets):
    return [int(t) for t in targets if t != IGNORE]


def test_sft_loss_mask_is_exactly_the_answer_block_bytes(tmp_path):
    tok = ByteTokenizer()
    q, a = "Which vitamin is fat-soluble?\nA. C\nB. D\nAnswer:", "B"
    path = write_jsonl(tmp_path / "sft.jsonl", [{"question": q, "answer": a}])
    ds = SFTDataset(path, tok, seq_len=256, add_bos=True, bos_id=tok.bos_id)
    tokens, targets = ds.batch([0], pad_id=tok.pad_id, pad_multiple=16)
    assert tokens.shape[1] % 16 == 0
    kept = masked_targets(tokens[0], targets[0])
    assert tok.decode(kept) == chatml("answer", a) == "<|im_start|>answer\nB<|im_end|>\n"
    # the context is everything before: BOS + question block, never in the loss
    n = len(tok.encode(chatml("question", q))) + 1
    assert (targets[0, : n - 1] == IGNORE).all() and targets[0, n - 1] != IGNORE
    assert tokens[0, 0] == tok.bos_id and tokens[0, 1] == tok.token_to_id("<|im_start|>")


def test_sft_loss_mask_with_the_llama2_tokenizer_and_chat_tokens(tmp_path):
    from meditron.model.tokenizer import add_chat_tokens, load_tokenizer

    tok = add_chat_tokens(load_tokenizer("llama-2"))
    rows = [{"question": "Is aspirin an NSAID?", "answer": "yes"},
            {"question": "Q: name a beta blocker", "answer": "Propranolol is a non-selective beta blocker."}]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    ds = SFTDataset(path, tok, seq_len=128, add_bos=True, bos_id=tok.bos_id)
    tokens, targets = ds.batch([0, 1], pad_id=tok.pad_id, pad_multiple=16)
    longest = max(len(s.ids) - 1 for s in ds.samples)
    assert tokens.shape == (2, -(-longest // 16) * 16)  # padded to a multiple of 16, no further
    for r, row in enumerate(rows):
        want = tok.encode(chatml("answer", row["answer"]), add_bos=False)
        assert want[0] == tok.token_to_id("<|im_start|>") and tok.token_to_id("<|im_end|>") in want
        assert masked_targets(tokens[r], targets[r]) == want
        n_real = len(ds.samples[r].ids) - 1
        assert (targets[r, n_real:] == IGNORE).all() and (tokens[r, n_real:] == tok.pad_id).all()


def test_sft_malformed_records_are_counted_not_fatal(tmp_path):
    tok = ByteTokenizer()
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\nnot json\n{"question": 3}\n{"question": "' + "x" * 300
                    + '", "answer": "y"}\n')
    ds = SFTDataset(path, tok, seq_len=64, add_bos=True, bos_id=1)
    assert len(ds) == 1 and sum(ds.rejected.values()) == 3
    with pytest.raises(DataError, match="no usable"):
        SFTDataset(write_jsonl(tmp_path / "none.jsonl", [{"q": 1}]), tok, 64)
