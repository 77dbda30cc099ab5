"""`meditron chat`: the chat template, streaming, multi-turn history; hub names offline."""

from __future__ import annotations

import pytest

from meditron.cli import main
from meditron.errors import ModelError


def test_chat_streams_replies_and_keeps_history(monkeypatch, capsys, smollm2):
    turns = iter(["What organ produces insulin?", "/reset", "And bile?", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(turns))
    seen_prompts = []
    from meditron.infer import generate

    original = generate.Generator.stream

    def spy(self, prompt, params):
        seen_prompts.append(prompt)
        yield from original(self, prompt, params)

    monkeypatch.setattr(generate.Generator, "stream", spy)
    assert main(["chat", "--temperature", "0", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2
    replies = [line.split("model> ", 1)[1] for line in out.splitlines() if line.startswith("model> ")]
    assert all(r.strip() for r in replies)
    assert seen_prompts[0].endswith("<|im_start|>user\nWhat organ produces insulin?<|im_end|>\n<|im_start|>assistant\n")
    assert "insulin" not in seen_prompts[1]  # /reset dropped the history


def test_hub_name_offline_is_a_clear_error(monkeypatch, tmp_path):
    from meditron.model.hub import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDITRON_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="could not fetch 'someorg/no-such-model'"):
        resolve("someorg/no-such-model")
