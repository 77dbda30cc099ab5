"""The model and its weights: knows nothing of data, training or parallelism.

Names are imported lazily so that `meditron.model.tokenizer` (used by the corpus builder and its
worker processes) does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"ModelConfig": "meditron.model.config", "preset": "meditron.model.config",
            "Transformer": "meditron.model.llama"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'meditron.model' has no attribute {name!r}")


__all__ = list(_EXPORTS)
