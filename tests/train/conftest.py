"""Fixtures for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_helpers import run_train


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> Path:
    """The uninterrupted single-process reference: 10 steps, checkpoints at 5 and 10."""
    out = tmp_path_factory.mktemp("baseline")
    run_train(out, [])
    return out


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """In-process runs use one thread: the tiny model gains nothing from more, and a busy machine
    with oversubscribed OpenMP threads can make a step a hundred times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
