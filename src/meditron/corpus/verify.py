"""Read the shards back and check them against the cleaned text: `meditron corpus verify DIR`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from meditron.corpus.config import from_dict_config
from meditron.corpus.shards import IndexedDataset
from meditron.errors import DataError


def verify(out_dir: str | Path) -> dict[str, int]:
    """Re-tokenize each split's cleaned JSONL and compare with the shard, document by document."""
    import yaml

    from meditron.corpus.pipeline import get_tokenizer

    out = Path(out_dir)
    if not (out / "config.yaml").is_file():
        raise DataError(f"{out} is not a corpus build folder (no config.yaml)")
    cfg = from_dict_config(yaml.safe_load((out / "config.yaml").read_text()))
    tok = get_tokenizer(cfg.tokenizer, cfg.meditron_tokens)
    eod = [tok.eod_id] if cfg.append_eod else []
    report = {}
    for split in ("train", "validation"):
        if not (out / f"{split}.idx").is_file():
            continue
        ds = IndexedDataset(out / split)
        path = out / f"{split}.jsonl.gz"
        if not path.is_file():
            raise DataError(f"{path} is missing; build with write_jsonl: true to verify")
        n = 0
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                row = json.loads(line)
                expected = np.asarray(tok.encode(row["text"], add_bos=False) + eod)
                if n > len(ds) or not np.array_equal(ds[n - 1].astype(np.int64), expected):
                    raise DataError(f"{split} document {n - 1} ({row['id']}) does not match its tokenized text")
        if n != len(ds):
            raise DataError(f"{split}: {len(ds)} documents in the shard but {n} in {path.name}")
        report[split] = n
    return report
