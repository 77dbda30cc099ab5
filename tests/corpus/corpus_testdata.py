"""Helpers that make small synthetic corpora for the corpus tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


WORDS = ("patient fever cough heart blood pressure screening adults children dose therapy trial "
         "randomized outcome risk factor disease infection vaccine antibiotic treatment guideline "
         "recommendation evidence study cohort analysis mortality hospital clinical diagnosis symptom "
         "chronic acute kidney liver lung brain cancer tumor cell gene protein receptor").split()


def sentence(rng, n=14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def paragraph(rng, sentences=8) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def write_jsonl_gz(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def corpus_config(root: Path, tokenizer: Path, bench: Path | None = None, **extra) -> str:
    import yaml

    cfg = {
        "root": str(root), "tasks": 4, "tokenizer": str(tokenizer), "meditron_tokens": True,
        "sources": [
            {"name": "guidelines", "type": "guidelines", "paths": ["guidelines/*.jsonl.gz"], "clean": "guidelines",
             "val_fraction": 0.05},
            {"name": "abstracts", "type": "pubmed_jsonl", "paths": ["abstracts/*.jsonl.gz"], "clean": "abstracts",
             "val_fraction": 0.03},
            {"name": "books", "type": "jsonl", "paths": ["books/*.jsonl.gz"], "clean": "plain", "weight": 1.5},
            {"name": "replay", "type": "jsonl", "role": "replay", "paths": ["replay/*.jsonl.gz"]},
        ],
        "language": {"enabled": False},
        "length": {"min_chars": 20, "min_words": 3},
        "decontam": {"enabled": bench is not None, "benchmarks_dir": str(bench or "")},
        "mix": {"replay_fraction": 0.05},
    }
    for k, v in extra.items():
        cfg[k] = v
    return yaml.safe_dump(cfg)
