"""The corpus build recipe: a dataclass tree loaded from YAML (`configs/corpus-sample.yaml`).

Paths may use `${VAR}` / `${VAR:-default}`; relative paths are resolved against the directory
the command runs from (the repo root in the docs), so no absolute path needs to be baked in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meditron.config import load_config, to_dict
from meditron.errors import ConfigError

SOURCE_TYPES = (
    "guidelines",      # JSONL in the epfl-llm/guidelines layout (clean_text | raw_text | text)
    "pubmed_jsonl",    # abstracts JSONL ({text} or {title, abstract})
    "pubmed_xml",      # NCBI PubMed baseline XML (.xml / .xml.gz)
    "s2orc",           # S2ORC JSON(L) with annotations, rendered the MEDITRON way
    "jats",            # PMC JATS XML full text
    "html",            # HTML pages, main text via trafilatura
    "pdf",             # PDF via pypdf
    "jsonl",           # generic JSONL ({id, text, ...}), e.g. replay or textbooks
    "parquet",         # generic Parquet with a text column
    "hub",             # a Hugging Face dataset name (streamed; needs network)
    "auto",            # per file, by extension; unknown files are rejected with a reason
)
CLEAN_PROFILES = ("guidelines", "abstracts", "papers", "plain", "none")


@dataclass
class SourceConfig:
    name: str = ""
    type: str = "jsonl"
    paths: list[str] = field(default_factory=list)   # globs, relative to `root`
    role: str = "medical"                             # medical | replay
    clean: str = "plain"                              # one of CLEAN_PROFILES
    text_field: str = "text"
    id_field: str = "id"
    weight: float = 1.0                               # upsampling factor for train (1 = none)
    val_fraction: float = 0.0                         # seeded validation split
    hub_name: str = ""                                # for type: hub
    hub_config: str = ""
    hub_split: str = "train"


@dataclass
class LanguageConfig:
    enabled: bool = True
    keep: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.5
    sample_chars: int = 10000


@dataclass
class LengthConfig:
    min_chars: int = 11          # MEDITRON's combine_guidelines drops texts of <= 10 characters
    min_words: int = 0
    max_chars: int = 5_000_000   # larger documents are rejected as "huge" before any processing


@dataclass
class DedupConfig:
    exact: bool = True
    exact_key_chars: int = 0     # 0: whole normalised text; 500: MEDITRON's guideline key
    near: bool = True
    shingle: int = 5             # words per shingle
    bands: int = 20              # LSH: 20 bands x 5 rows (100 hash functions), S-curve midpoint ~0.55
    rows: int = 5
    threshold: float = 0.7       # candidate pairs are duplicates only if estimated Jaccard >= threshold
    seed: int = 1


@dataclass
class DecontamConfig:
    enabled: bool = True
    benchmarks_dir: str = "${MEDITRON_SHARED_DATA:-../shared/data}/benchmarks"
    ngram: int = 13
    min_words: int = 8           # items shorter than `ngram` words match as a whole if >= this long
    action: str = "drop"         # drop | flag
    max_items_per_ngram: int = 3 # n-grams shared by more items are exam boilerplate, not evidence
    benchmarks: list[str] = field(
        default_factory=lambda: ["medqa", "medmcqa", "pubmedqa", "mmlu_medical", "truthfulqa"])


@dataclass
class MixConfig:
    replay_fraction: float = 0.01   # share of train tokens given to role=replay sources
    replay_keep: float = 0.0        # >0: keep each replay document with this probability before any
                                    # processing (MEDITRON's replay.py --keep); 0: consider them all
    seed: int = 1234


@dataclass
class ExecutorConfig:
    kind: str = "local"             # local | slurm | ray
    start_method: str = "fork"      # local multiprocessing start method
    options: dict[str, Any] = field(default_factory=dict)   # passed to the Slurm/Ray executor


@dataclass
class CorpusConfig:
    root: str = "."
    sources: list[SourceConfig] = field(default_factory=list)
    tasks: int = 8                  # shards of the per-document stage; independent of --workers
    limit_per_source: int = 0       # 0 = all records
    tokenizer: str = "llama-2"
    meditron_tokens: bool = True
    append_eod: bool = True
    rules_file: str = ""            # per-source truncation rules (YAML); empty = the packaged ones
    legacy_bugs: bool = False       # reproduce MEDITRON's cleaning bugs (for comparisons only)
    write_jsonl: bool = True        # also write the cleaned text of each split as JSONL (gz)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(path: str) -> str:
    """Expand `${VAR}` and `${VAR:-default}` (unset VAR without default is a config error)."""
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"path {path!r} uses ${{{m.group(1)}}}, which is not set; set it or give a default")
    return os.path.expanduser(_VAR.sub(sub, path))


def resolve(path: str) -> Path:
    return Path(expand(path)).resolve()


def validate(cfg: CorpusConfig) -> CorpusConfig:
    """Check the values a dataclass cannot; every message names the key and the fix."""
    if not cfg.sources:
        raise ConfigError("config has no `sources`; list at least one source (name, type, paths)")
    names = set()
    for i, s in enumerate(cfg.sources):
        where = f"sources[{i}]"
        if not s.name or not re.fullmatch(r"[A-Za-z0-9_.-]+", s.name):
            raise ConfigError(f"{where}.name {s.name!r} must be a non-empty word (letters, digits, _ . -)")
        if s.name in names:
            raise ConfigError(f"{where}.name {s.name!r} is used twice; source names must be unique")
        names.add(s.name)
        if s.type not in SOURCE_TYPES:
            raise ConfigError(f"{where}.type {s.type!r} is unknown; use one of {', '.join(SOURCE_TYPES)}")
        if s.clean not in CLEAN_PROFILES:
            raise ConfigError(f"{where}.clean {s.clean!r} is unknown; use one of {', '.join(CLEAN_PROFILES)}")
        if s.role not in ("medical", "replay"):
            raise ConfigError(f"{where}.role {s.role!r} must be 'medical' or 'replay'")
        if s.type == "hub" and not s.hub_name:
            raise ConfigError(f"{where}: type hub needs hub_name (a Hugging Face dataset name)")
        if s.type != "hub" and not s.paths:
            raise ConfigError(f"{where}.paths is empty; give file globs relative to `root`")
        if not 0.0 <= s.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction must be in [0, 1), got {s.val_fraction}")
        if s.weight < 0:
            raise ConfigError(f"{where}.weight must be >= 0, got {s.weight}")
    if cfg.tasks < 1:
        raise ConfigError(f"tasks must be >= 1, got {cfg.tasks}")
    d = cfg.dedup
    if d.shingle < 1 or d.bands < 1 or d.rows < 1 or not 0 < d.threshold <= 1:
        raise ConfigError("dedup: shingle, bands and rows must be >= 1 and threshold in (0, 1]")
    if cfg.decontam.action not in ("drop", "flag"):
        raise ConfigError(f"decontam.action {cfg.decontam.action!r} must be 'drop' or 'flag'")
    if cfg.decontam.ngram < 1 or cfg.decontam.min_words < 1:
        raise ConfigError("decontam.ngram and decontam.min_words must be >= 1")
    if not 0.0 <= cfg.mix.replay_keep <= 1.0:
        raise ConfigError(f"mix.replay_keep must be in [0, 1], got {cfg.mix.replay_keep}")
    if not 0.0 <= cfg.mix.replay_fraction < 1.0:
        raise ConfigError(f"mix.replay_fraction must be in [0, 1), got {cfg.mix.replay_fraction}")
    if cfg.executor.kind not in ("local", "slurm", "ray"):
        raise ConfigError(f"executor.kind {cfg.executor.kind!r} must be local, slurm or ray")
    return cfg


def check_for_build(cfg: CorpusConfig) -> None:
    """Checks a new build needs before any work starts, beyond `validate` (which also runs inside executor
    tasks and `corpus verify`, possibly elsewhere and on folders built by earlier versions, so it
    stays free of file-system and newer rules)."""
    for i, s in enumerate(cfg.sources):
        if s.role == "replay" and s.val_fraction:   # the replay budget samples train only
            raise ConfigError(f"sources[{i}].val_fraction: a replay source has no validation split (MEDITRON's "
                              "replay is train-only, sampled to mix.replay_fraction); remove it")
        if s.role == "replay" and s.weight != 1.0:
            raise ConfigError(f"sources[{i}].weight does not apply to a replay source, whose share of train is "
                              "mix.replay_fraction; remove it")
    rules = rules_path(cfg)
    if rules:
        if not Path(rules).is_file():
            shown = repr(cfg.rules_file) + (f" ({rules})" if rules != cfg.rules_file else "")
            raise ConfigError(f"rules_file {shown} is not a file; give a YAML of per-source rules, or leave it "
                              "empty for the packaged guideline rules")
        from meditron.corpus.clean import load_rules

        load_rules(rules)   # a malformed file fails here, not inside the tasks


def rules_path(cfg: CorpusConfig) -> str:
    """The rules file as an absolute path, or "" for the packaged rules (also when `${VAR:-}` is empty)."""
    return str(resolve(cfg.rules_file)) if cfg.rules_file and expand(cfg.rules_file) else ""


def load_corpus_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> CorpusConfig:
    return validate(load_config(CorpusConfig, path, overrides))


def fingerprint(cfg: CorpusConfig) -> str:
    """Hash of everything that changes outputs (the executor does not), the contents of a custom
    `rules_file` included: editing it between two runs into one folder would mix two cleanings."""
    data = to_dict(cfg)
    data.pop("executor", None)
    rules = rules_path(cfg)
    if rules and Path(rules).is_file():
        data["rules_file_sha256"] = hashlib.sha256(Path(rules).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def as_dict(cfg: CorpusConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict_config(data: dict[str, Any]) -> CorpusConfig:
    """Rebuild a (validated) config from `as_dict` output, e.g. inside an executor task."""
    from meditron.config import from_dict

    return validate(from_dict(CorpusConfig, data))
