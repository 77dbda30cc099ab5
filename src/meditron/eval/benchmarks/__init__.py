"""The benchmark registry: name -> `Benchmark` spec (adding a benchmark = a module + an entry here)."""

from __future__ import annotations

from meditron.errors import ConfigError
from meditron.eval.benchmarks.base import Benchmark, Item
from meditron.eval.benchmarks.medmcqa import MEDMCQA
from meditron.eval.benchmarks.medqa import MEDQA, MEDQA4
from meditron.eval.benchmarks.mmlu import MMLU_MEDICAL
from meditron.eval.benchmarks.pubmedqa import PUBMEDQA
from meditron.eval.benchmarks.truthfulqa import TRUTHFULQA

REGISTRY: dict[str, Benchmark] = {b.name: b for b in (MEDQA, MEDQA4, MEDMCQA, PUBMEDQA, MMLU_MEDICAL, TRUTHFULQA)}
ALIASES = {"mmlu": "mmlu_medical", "truthfulqa": "truthfulqa_medical", "medqa5": "medqa"}


def get(name: str) -> Benchmark:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[key]


__all__ = ["Benchmark", "Item", "REGISTRY", "get"]
