"""Weights in and out: HF folders (single, sharded), GGUF of every supported type, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import random_tokens, tiny_model
from meditron.errors import ModelError
from meditron.model.weights import load_gguf_model, load_hf_folder, save_hf, resize_embeddings


def _all_tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard_bytes", [2**40, 40_000])
def test_hf_folder_round_trip_is_bit_identical(tmp_path, dtype, shard_bytes):
    """HF folder (written by transformers) -> meditron -> HF folder: the same tensors, bit for bit."""
    import transformers

    src_model = tiny_model("tiny-gqa")
    hf = transformers.LlamaForCausalLM(transformers.AutoConfig.for_model(**src_model.config.to_hf()))
    hf.to(dtype).save_pretrained(tmp_path / "a", max_shard_size=shard_bytes)
    ours = load_hf_folder(tmp_path / "a")  # dtype None keeps the stored dtype
    assert next(ours.parameters()).dtype == dtype
    save_hf(ours, tmp_path / "b", max_shard_bytes=shard_bytes)
    a, b = _all_tensors(tmp_path / "a"), _all_tensors(tmp_path / "b")
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    if shard_bytes < 2**40:
        assert (tmp_path / "b" / "model.safetensors.index.json").is_file()
        assert len(list((tmp_path / "b").glob("*.safetensors"))) > 1


def test_gguf_to_hf_folder_to_transformers_gives_the_same_logits(smollm2, smollm2_gguf, tmp_path):
    import transformers

    model, tok = smollm2
    direct = load_gguf_model(smollm2_gguf)  # GGUF -> meditron, without the cache
    save_hf(direct, tmp_path / "out", tokenizer=tok)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    tokens = random_tokens(model.config, 2, 32, seed=3)
    with torch.no_grad():
        assert (direct(tokens) - hf(tokens).logits).abs().max().item() <= 1e-4
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is True


# -- GGUF files of each supported tensor type, written with the gguf package ------------------------
def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's Q/K permutation (rotate-half -> interleaved), the inverse of what we undo."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path, qtype: str) -> None:
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    names = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
             "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
             "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    for name, t in model.state_dict().items():
        arr = t.float().numpy()
        parts = name.split(".")
        if parts[0] == "layers":
            gname = f"blk.{parts[1]}.{names['.'.join(parts[2:-1])]}.weight"
        else:
            gname = {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output"}[parts[0]] + ".weight"
        if gname.endswith("attn_q.weight"):
            arr = _permute(arr, cfg.n_heads)
        elif gname.endswith("attn_k.weight"):
            arr = _permute(arr, cfg.n_kv_heads)
        if arr.ndim == 1 or qtype == "F32":
            w.add_tensor(gname, arr)
        elif qtype == "F16":
            w.add_tensor(gname, arr.astype(np.float16))
        elif qtype == "BF16":
            w.add_tensor(gname, quants.quantize(arr, Q.BF16), raw_dtype=Q.BF16)
        else:
            q = getattr(Q, qtype)
            w.add_tensor(gname, quants.quantize(arr, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("qtype,tol", [("F32", 0.0), ("F16", 1e-3), ("BF16", 1e-2),
                                       ("Q8_0", 2e-3), ("Q4_0", 3e-2), ("Q4_1", 2e-2)])
def test_gguf_types_are_dequantised_to_the_original_weights(tmp_path, qtype, tol):
    model = tiny_model("tiny-gqa", dim=64, ffn_dim=128)
    write_gguf(model, tmp_path / "m.gguf", qtype)
    loaded = load_gguf_model(tmp_path / "m.gguf")
    assert loaded.config.n_kv_heads == model.config.n_kv_heads
    for name, ref in model.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.shape == ref.shape, name
        assert (got - ref).abs().max().item() <= tol, name
    # Q/K un-permutation is right: logits follow the weights.
    tokens = random_tokens(model.config, 2, 16)
    with torch.no_grad():
        diff = (loaded(tokens) - model(tokens)).abs().max().item()
    assert diff <= (1e-5 if qtype == "F32" else 1.0)


def test_unsupported_gguf_tensor_type_is_a_clear_error(tmp_path):
    import gguf
    from gguf import GGMLQuantizationType as Q

    model = tiny_model("tiny-gqa", dim=64, ffn_dim=256, n_layers=1)
    write_gguf(model, tmp_path / "ok.gguf", "F32")
    w = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "llama")
    reader = gguf.GGUFReader(str(tmp_path / "ok.gguf"))
    for field in reader.fields.values():
        if field.name.startswith("llama."):
            value = field.contents()
            if isinstance(value, float):
                w.add_float32(field.name, value)
            else:
                w.add_uint32(field.name, int(value))
    for t in reader.tensors:
        data = np.array(t.data)
        if t.name == "blk.0.ffn_down.weight":  # declare IQ4_NL, which we do not dequantise
            rows, cols = int(t.shape[1]), int(t.shape[0])
            w.add_tensor(t.name, np.zeros((rows, cols // 32 * 18), dtype=np.uint8), raw_dtype=Q.IQ4_NL)
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="IQ4_NL"):
        load_gguf_model(tmp_path / "bad.gguf")


def test_resize_embeddings_adds_mean_rows():
    model = tiny_model("tiny-gqa")
    old = model.tok_embeddings.weight.detach().clone()
    resize_embeddings(model, old.shape[0] + 17)
    new = model.tok_embeddings.weight
    assert new.shape[0] == old.shape[0] + 17 and model.config.vocab_size == new.shape[0]
    assert torch.equal(new[: old.shape[0]], old)
    assert torch.allclose(new[old.shape[0]:], old.mean(0, keepdim=True).expand(17, -1))
    assert model.output.weight.shape[0] == new.shape[0]
    with torch.no_grad():
        assert model(torch.tensor([[old.shape[0] + 5]])).shape[-1] == new.shape[0]
