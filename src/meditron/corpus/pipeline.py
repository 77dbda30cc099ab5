"""Build the GAP-Replay corpus from a config: the stages, run on datatrove executors.

    prepare  (config.tasks tasks, parallel)  read -> clean -> filter (length, language)
             -> decontaminate -> hash/MinHash -> tokenize, per document; task k takes input
             units k, k+tasks, ... so its work depends on the data and `tasks`, never on workers
    select   (1 task, global)  exact + near dedup across sources, splits, replay sampling,
             upsampling; merges rejects and drops
    pack     (1 task)          Megatron .bin/.idx per split (+ cleaned JSONL), in a fixed order
    report   (1 task)          mixture table and data card

Each stage is a datatrove `PipelineStep` run by a datatrove executor (local by default; Slurm and
Ray from `executor.kind`), whose completion markers make a restarted run skip finished tasks.
Every output is written to a temporary name and renamed, so a killed task leaves nothing that
looks complete; the final files depend only on the data and the config.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from meditron.config import to_dict
from meditron.corpus.config import (CorpusConfig, as_dict, check_for_build, fingerprint, from_dict_config,
                                    load_corpus_config, resolve, rules_path, validate)
from meditron.errors import ConfigError, DataError

try:  # datatrove is the engine; imported lazily-tolerant so `meditron --help` works without it
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - reported when a build starts
    PipelineStep = object  # type: ignore[misc,assignment]

SPLITS = ("train", "validation")
CRASH_ENV = "MEDITRON_CORPUS_CRASH"     # "stage:rank" - test hook: the task dies half-way (os._exit)

_TOKENIZERS: dict[tuple[str, bool], Any] = {}


# ----------------------------------------------------------------------------------- helpers
def get_tokenizer(ref: str, meditron_tokens: bool):
    """The configured tokenizer (cached per process; forked workers inherit the parent's)."""
    key = (ref, meditron_tokens)
    if key not in _TOKENIZERS:
        from meditron.model.tokenizer import add_meditron_tokens, load_tokenizer

        tok = load_tokenizer(ref)
        if meditron_tokens:
            tok = add_meditron_tokens(tok)
        if tok.eod_id is None:
            raise ConfigError(f"tokenizer {ref!r} has no EOS/<EOD> token to end documents; set meditron_tokens: true")
        _TOKENIZERS[key] = tok
    return _TOKENIZERS[key]


def _write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    """Atomic JSON write; work files pass indent=None (json's C encoder only runs without indent)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


GZIP_BLOCK = 4 << 20    # uncompressed bytes per gzip member of a .jsonl.gz


def _write_jsonl(path: Path, rows, compress: bool = False, threads: int = 1, block: int = GZIP_BLOCK) -> None:
    """Atomic JSONL write. Compressed files are a series of gzip members of `block` bytes each
    (one valid .gz stream), compressed by `threads` threads: zlib releases the GIL, and the fixed
    block size keeps the bytes the same whatever the thread count."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if not compress:
            for row in rows:
                f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        else:
            lines = ((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8") for row in rows)
            _write_gzip_members(f, _blocks(lines, block), threads)
    os.replace(tmp, path)


def _blocks(chunks, size: int):
    """Concatenate byte strings into blocks of at least `size` bytes (the last one may be shorter)."""
    buf, n = [], 0
    for c in chunks:
        buf.append(c)
        n += len(c)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def _write_gzip_members(f, blocks, threads: int) -> None:
    """Compress each block as its own gzip member, in order; no rows still make a valid (empty) stream."""
    written = 0
    if threads <= 1:
        for block in blocks:
            written += f.write(gzip.compress(block, compresslevel=6, mtime=0))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            pending = []
            for block in blocks:
                pending.append(pool.submit(gzip.compress, block, 6, mtime=0))
                while len(pending) > threads:   # bounded memory: threads + 2 blocks at most (one being built)
                    written += f.write(pending.pop(0).result())
            for fut in pending:
                written += f.write(fut.result())
    if not written:
        f.write(gzip.compress(b"", compresslevel=6, mtime=0))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _maybe_crash(stage: str, rank: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{stage}:{rank}":
        sys.stderr.flush()
        os._exit(137)


class _Stage(PipelineStep):
    type = "meditron"

    def __init__(self, cfg: dict, out_dir: str):
        super().__init__()
        self.cfg_dict, self.out_dir = cfg, out_dir

    @property
    def cfg(self) -> CorpusConfig:
        if getattr(self, "_cfg", None) is None:
            self._cfg = from_dict_config(self.cfg_dict)
        return self._cfg

    @property
    def work(self) -> Path:
        return Path(self.out_dir) / "_work"


# ------------------------------------------------------------------------------------ prepare
class PrepareStage(_Stage):
    """Per-document work for one task's share of every source."""
    name = "prepare"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from meditron.corpus import clean as cleaning
        from meditron.corpus import mix
        from meditron.corpus.decontam import NgramIndex
        from meditron.corpus.dedup import MinHasher, exact_key
        from meditron.corpus.filters import LanguageID, length_reason
        from meditron.corpus.ngrams import word_hashes
        from meditron.corpus.shards import IndexedDatasetWriter, token_dtype
        from meditron.corpus.sources import Reject, list_files, read_source

        cfg = self.cfg
        root = resolve(cfg.root)
        final = self.work / "prepare" / f"{rank:05d}"
        tmp = self.work / "prepare" / f"{rank:05d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tok = get_tokenizer(cfg.tokenizer, cfg.meditron_tokens)
        eod = [tok.eod_id] if cfg.append_eod else []
        lid = LanguageID(cfg.language.sample_chars) if cfg.language.enabled else None
        index = NgramIndex.load(self.work / "bench_index.npz") if cfg.decontam.enabled else None
        hasher = MinHasher(cfg.dedup.shingle, cfg.dedup.bands, cfg.dedup.rows, cfg.dedup.seed) if cfg.dedup.near else None
        keep_langs = set(cfg.language.keep)
        max_bytes = cfg.length.max_chars * 4

        stats: dict[str, Any] = {}
        docs, sigs, rejects, dropped, contam, offsets = [], [], [], [], [], []
        writer = IndexedDatasetWriter(tmp / "tokens", token_dtype(tok.vocab_size))
        texts = open(tmp / "texts.jsonl", "wb")      # streamed; read back by offset in the pack stage
        crash_at = os.environ.get(CRASH_ENV) == f"prepare:{rank}"
        rules_file = rules_path(cfg)
        for si, src in enumerate(cfg.sources):
            st = stats.setdefault(src.name, {"units": 0, "rejected": Counter(), "dropped": Counter(), "kept": 0,
                                             "chars_in": 0, "chars_out": 0, "tokens": 0, "languages": Counter()})
            files = list_files(src, root)
            for k, unit, res in read_source(src, files, root, rank, world_size, cfg.limit_per_source, max_bytes):
                st["units"] += 1
                if crash_at and st["units"] > 5:
                    _maybe_crash("prepare", rank)
                if isinstance(res, Reject) or len(res.text) > cfg.length.max_chars:
                    if not isinstance(res, Reject):
                        res = Reject("huge_document", f"{len(res.text)} characters > length.max_chars {cfg.length.max_chars}",
                                     res.text[:200])
                    st["rejected"][res.reason] += 1
                    self.stat_update(f"rejected_{res.reason}")
                    rejects.append({"key": [si, k], "source": src.name, "file": unit.file, "where": unit.where,
                                    "reason": res.reason, "detail": res.detail, "snippet": res.snippet})
                    continue
                doc = res
                doc_id = f"{src.name}/{doc.id}"
                st["chars_in"] += len(doc.text)

                def drop(reason: str, detail: str = "") -> None:
                    st["dropped"][reason] += 1
                    self.stat_update(f"dropped_{reason}")
                    dropped.append({"key": [si, k], "id": doc_id, "source": src.name, "reason": reason, "detail": detail})

                if (src.role == "replay" and cfg.mix.replay_keep > 0
                        and mix.u(cfg.mix.seed, "replay_keep", doc_id) >= cfg.mix.replay_keep):
                    drop("replay_not_kept", f"pre-sampling, mix.replay_keep={cfg.mix.replay_keep}")
                    continue
                text, why = cleaning.clean_text(doc.text, src.clean, str(doc.meta.get("source", "")),
                                                rules_file, cfg.legacy_bugs)
                if text is None:
                    drop(why)
                    continue
                if not text.strip():
                    drop("empty_after_cleaning")
                    continue
                wh = word_hashes(text)
                why = length_reason(text, int(wh.size), cfg.length.min_chars, cfg.length.min_words)
                if why:
                    drop(why, f"{len(text)} chars, {wh.size} words")
                    continue
                lang, score = ("", 1.0)
                if lid is not None:
                    lang, score = lid(text)
                    st["languages"][lang] += 1
                    if lang not in keep_langs or score < cfg.language.min_score:
                        drop("language", f"{lang} ({score:.2f})")
                        continue
                hits: list[int] = sorted(index.match(wh)) if index is not None else []
                if hits:
                    contam.append({"key": [si, k], "id": doc_id, "source": src.name, "items": hits})
                    if cfg.decontam.action == "drop":
                        drop("contaminated", ", ".join(":".join(index.items[i]) for i in hits[:5]))
                        continue
                ids = tok.encode(text, add_bos=False) + eod
                writer.add_document(ids)
                if hasher is not None:
                    sigs.append(hasher.signature(wh))
                docs.append({"key": [si, k], "id": doc_id, "source": src.name, "chars": len(text), "words": int(wh.size),
                             "tokens": len(ids), "exact": exact_key(text, cfg.dedup.exact_key_chars) if cfg.dedup.exact else "",
                             "lang": lang, "lang_score": round(score, 4), "contaminated": bool(hits),
                             "title": str(doc.meta.get("title", ""))[:200]})
                offsets.append(texts.tell())
                texts.write((json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
                st["kept"] += 1
                st["chars_out"] += len(text)
                st["tokens"] += len(ids)
                self.stat_update("kept")
        writer.close()
        texts.close()
        _write_jsonl(tmp / "docs.jsonl", docs)
        np.save(tmp / "text_offsets.npy", np.asarray(offsets, dtype=np.int64))
        _write_jsonl(tmp / "rejects.jsonl", rejects)
        _write_jsonl(tmp / "dropped.jsonl", dropped)
        _write_jsonl(tmp / "contam.jsonl", contam)
        n_perm = cfg.dedup.bands * cfg.dedup.rows
        np.save(tmp / "sigs.npy", np.stack(sigs) if sigs else np.zeros((0, n_perm), dtype=np.uint32))
        _write_json(tmp / "stats.json", {name: {k: dict(v) if isinstance(v, Counter) else v for k, v in s.items()}
                                         for name, s in stats.items()})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return
        yield  # a generator, as datatrove expects


# ------------------------------------------------------------------------------------- select
class SelectStage(_Stage):
    """Global decisions over all prepared documents: dedup, splits, replay, upsampling."""
    name = "select"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from meditron.corpus import mix
        from meditron.corpus.dedup import MinHasher, cluster

        _maybe_crash("select", rank)
        cfg = self.cfg
        out = Path(self.out_dir)
        tasks = cfg.tasks
        docs, sigs, rejects, dropped, contam = [], [], [], [], []
        for t in range(tasks):
            d = self.work / "prepare" / f"{t:05d}"
            rows = _read_jsonl(d / "docs.jsonl")
            for j, r in enumerate(rows):
                r["task"], r["local"] = t, j
            docs.extend(rows)
            if cfg.dedup.near:
                sigs.append(np.load(d / "sigs.npy"))
            rejects.extend(_read_jsonl(d / "rejects.jsonl"))
            dropped.extend(_read_jsonl(d / "dropped.jsonl"))
            contam.extend(_read_jsonl(d / "contam.jsonl"))
        order = sorted(range(len(docs)), key=lambda i: tuple(docs[i]["key"]))
        docs = [docs[i] for i in order]
        sig = np.concatenate(sigs)[order] if cfg.dedup.near and docs else None
        src_cfg = {s.name: s for s in cfg.sources}
        src_idx = {s.name: i for i, s in enumerate(cfg.sources)}

        # -- dedup across sources
        rank_key = [(src_idx[d["source"]], -d["chars"], tuple(d["key"])) for d in docs]
        hasher = MinHasher(cfg.dedup.shingle, cfg.dedup.bands, cfg.dedup.rows, cfg.dedup.seed) if cfg.dedup.near else None
        res = cluster([d["exact"] for d in docs] if cfg.dedup.exact else None, sig, rank_key, hasher, cfg.dedup.threshold)
        clusters = []
        for members in res.clusters:
            clusters.append({"kept": docs[members[0]]["id"],
                             "dropped": [{"id": docs[i]["id"], "reason": res.reason[i]} for i in members[1:]]})
        for i, d in enumerate(docs):
            if not res.keep[i]:
                dropped.append({"key": d["key"], "id": d["id"], "source": d["source"], "reason": res.reason[i],
                                "detail": f"kept: {docs[res.kept_by[i]]['id']}"})
        survivors = [d for i, d in enumerate(docs) if res.keep[i]]

        # -- splits, upsampling, replay
        seed = cfg.mix.seed
        for d in survivors:
            s = src_cfg[d["source"]]
            d["split"] = mix.split_of(seed, d["id"], s.val_fraction)
            d["repeats"] = mix.repeats(seed, d["id"], s.weight) if d["split"] == "train" else 1
        medical_train = sum(d["tokens"] * d["repeats"] for d in survivors
                            if d["split"] == "train" and src_cfg[d["source"]].role == "medical")
        budget = mix.replay_budget(medical_train, cfg.mix.replay_fraction)
        replay = sorted((d for d in survivors if src_cfg[d["source"]].role == "replay" and d["split"] == "train"),
                        key=lambda d: mix.u(seed, "replay", d["id"]))
        used = 0
        for d in replay:
            if used < budget:
                d["repeats"] = 1
                used += d["tokens"]
            else:
                d["repeats"] = 0
                dropped.append({"key": d["key"], "id": d["id"], "source": d["source"], "reason": "replay_not_sampled",
                                "detail": ""})
        plan = {split: [[d["task"], d["local"], d["repeats"]] for d in survivors
                        if d["split"] == split and d["repeats"] > 0] for split in SPLITS}
        plan_docs = {split: [{"id": d["id"], "source": d["source"], "tokens": d["tokens"], "repeats": d["repeats"],
                              "contaminated": d["contaminated"]}
                             for d in survivors if d["split"] == split and d["repeats"] > 0] for split in SPLITS}
        # the mixture table (tokens counted with repeats, as written)
        rows = []
        for s in cfg.sources:
            row = {"source": s.name, "role": s.role, "weight": s.weight}
            for split in SPLITS:
                entries = [e for e in plan_docs[split] if e["source"] == s.name]
                row[f"{split}_docs"] = sum(e["repeats"] for e in entries)
                row[f"{split}_tokens"] = sum(e["tokens"] * e["repeats"] for e in entries)
                row[f"{split}_unique_docs"] = len(entries)
            rows.append(row)

        rejects.sort(key=lambda r: tuple(r["key"]))
        dropped.sort(key=lambda r: (tuple(r["key"]), r["reason"]))
        contam.sort(key=lambda r: tuple(r["key"]))
        _write_jsonl(out / "rejects.jsonl", rejects)
        _write_jsonl(out / "dropped.jsonl", dropped)
        _write_jsonl(out / "dedup_clusters.jsonl", clusters)
        sel = self.work / "select"
        sel.mkdir(parents=True, exist_ok=True)
        _write_json(sel / "plan.json", plan, indent=None)
        _write_json(sel / "summary.json", {
            "mixture": rows, "replay_budget_tokens": budget, "replay_tokens": used,
            "medical_train_tokens": medical_train, "docs_in": len(docs),
            "dedup": {"clusters": len(res.clusters), "candidate_pairs": res.candidate_pairs,
                      "verified_pairs": res.verified_pairs,
                      "dropped": dict(Counter(r for r in res.reason if r)),
                      "dropped_by_source": {s: dict(c) for s, c in _count_by(docs, res.reason).items()},
                      "largest_clusters": sorted((len(m) for m in res.clusters), reverse=True)[:10]},
            "contaminated_docs": [c["id"] for c in contam],
        })
        _write_json(sel / "plan_docs.json", plan_docs, indent=None)
        return
        yield


def _count_by(docs, reasons) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for d, r in zip(docs, reasons):
        if r:
            out[d["source"]][r] += 1
    return out


# --------------------------------------------------------------------------------------- pack
class PackStage(_Stage):
    """Write the Megatron shards (and the cleaned JSONL) of each split in the planned order.

    One task (the order is global), but its gzip compression uses as many threads as the build
    has workers: it is the largest serial cost of a build.
    """
    name = "pack"

    def __init__(self, cfg: dict, out_dir: str, threads: int = 1):
        super().__init__(cfg, out_dir)
        self.threads = threads

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from meditron.corpus.shards import IndexedDataset, IndexedDatasetWriter

        _maybe_crash("pack", rank)
        cfg = self.cfg
        out = Path(self.out_dir)
        plan = json.loads((self.work / "select" / "plan.json").read_text())
        plan_docs = json.loads((self.work / "select" / "plan_docs.json").read_text())
        shards = [IndexedDataset(self.work / "prepare" / f"{t:05d}" / "tokens") for t in range(cfg.tasks)]
        texts = offsets = None
        if cfg.write_jsonl:     # cleaned text, read by offset: memory stays flat however big the corpus
            texts = [open(self.work / "prepare" / f"{t:05d}" / "texts.jsonl", "rb") for t in range(cfg.tasks)]
            offsets = [np.load(self.work / "prepare" / f"{t:05d}" / "text_offsets.npy") for t in range(cfg.tasks)]

        def text_of(t: int, j: int) -> str:
            texts[t].seek(int(offsets[t][j]))
            return json.loads(texts[t].readline())["text"]
        for split in SPLITS:
            for suffix in (".bin", ".idx", ".jsonl.gz", ".docs.jsonl"):
                (out / f"{split}{suffix}").unlink(missing_ok=True)
            if not plan[split]:
                continue
            with IndexedDatasetWriter(out / split, shards[0].dtype) as w:
                for t, j, rep in plan[split]:
                    toks = shards[t][j]
                    for _ in range(rep):
                        w.add_document(toks)
            rows = []
            for e in plan_docs[split]:
                rows.extend([e] * e["repeats"])
            _write_jsonl(out / f"{split}.docs.jsonl", ({"id": e["id"], "source": e["source"], "tokens": e["tokens"],
                                                        "contaminated": e["contaminated"]} for e in rows))
            if texts is not None:
                def gen():
                    for (t, j, rep), e in zip(plan[split], plan_docs[split]):
                        row = {"id": e["id"], "source": e["source"], "text": text_of(t, j)}
                        for _ in range(rep):
                            yield row
                _write_jsonl(out / f"{split}.jsonl.gz", gen(), compress=True, threads=self.threads)
        for f in texts or []:
            f.close()
        return
        yield


# ------------------------------------------------------------------------------------- report
class ReportStage(_Stage):
    name = "report"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from meditron.corpus.datacard import write_datacard

        write_datacard(self.cfg, Path(self.out_dir))
        return
        yield


# ---------------------------------------------------------------------------------- executors
def _quiet_local_executor():
    from datatrove.executor.local import LocalPipelineExecutor

    class QuietLocalExecutor(LocalPipelineExecutor):
        """Task logs go to files only (errors still reach stderr); progress is our bar."""

        def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
            local_rank = ranks_q.get()
            try:
                return self._run_for_rank(rank, local_rank + 1)
            finally:
                ranks_q.put(local_rank)
                _quiet_datatrove()      # datatrove re-adds its DEBUG console logger after each task
    return QuietLocalExecutor


def make_executor(cfg: CorpusConfig, stage: _Stage, tasks: int, workers: int, logging_dir: Path, depends=None):
    kind = cfg.executor.kind
    opts = dict(cfg.executor.options)
    if kind == "local":
        cls = _quiet_local_executor()
        return cls([stage], tasks=tasks, workers=max(1, min(workers, tasks)), logging_dir=str(logging_dir),
                   start_method=cfg.executor.start_method, depends=depends)
    if kind == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        for key in ("time", "partition"):
            if key not in opts:
                raise ConfigError(f"executor.kind slurm needs executor.options.{key}")
        return SlurmPipelineExecutor([stage], tasks=tasks, workers=workers, logging_dir=str(logging_dir),
                                     depends=depends, job_name=f"meditron-corpus-{stage.name}", **opts)
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor([stage], tasks=tasks, workers=workers, logging_dir=str(logging_dir),
                                   depends=depends, **opts)
    raise ConfigError(f"executor.kind {kind!r} must be local, slurm or ray")


def _quiet_datatrove() -> None:
    """datatrove logs through loguru at INFO; keep the console for warnings and our progress bars."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _progress(label: str, completions: Path, total: int, stop: threading.Event) -> None:
    """Tasks done per stage: a tqdm bar with ETA on a terminal, one line per change in a log."""
    from tqdm import tqdm

    def count() -> int:
        return len(list(completions.glob("*"))) if completions.is_dir() else 0

    t0 = time.perf_counter()
    if sys.stderr.isatty():
        with tqdm(total=total, desc=f"corpus {label}", unit="task", file=sys.stderr, dynamic_ncols=True) as bar:
            while True:
                bar.update(count() - bar.n)
                if stop.is_set():
                    break
                stop.wait(0.5)
        return
    last = -1
    while True:
        done = count()
        if done != last:
            print(f"corpus {label}: {done}/{total} tasks done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)
            last = done
        if stop.is_set():
            break
        stop.wait(1.0)


def _check_fingerprint(cfg: CorpusConfig, work: Path) -> None:
    fp = fingerprint(cfg)
    marker = work / "fingerprint"
    if marker.is_file() and marker.read_text().strip() != fp:
        raise ConfigError(f"{work.parent} holds a build of a different config; use another --out, or delete "
                          f"{work} to start over")
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp + "\n")


def build(config_path: str | os.PathLike | None, out_dir: str | os.PathLike, workers: int = 1,
          overrides: list[str] | None = None, config: CorpusConfig | None = None) -> Path:
    """Run the whole build; returns the output folder. Restartable: finished tasks are skipped."""
    try:
        import datatrove  # noqa: F401
    except ImportError:
        raise ConfigError("corpus building needs datatrove: pip install 'meditron[corpus]'") from None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = validate(config) if config is not None else load_corpus_config(config_path, overrides)
    check_for_build(cfg)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(out_dir).resolve()
    work = out / "_work"
    root = resolve(cfg.root)
    from meditron.corpus.sources import check_sources

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_sources(cfg.sources, root)
    _check_fingerprint(cfg, work)
    # the resolved config, next to the outputs
    import yaml
    (out / "config.yaml").write_text(yaml.safe_dump(as_dict(cfg), sort_keys=False))
    get_tokenizer(cfg.tokenizer, cfg.meditron_tokens)   # fail fast, and warm the cache before forking
    if cfg.decontam.enabled and not (work / "bench_index.npz").is_file():
        from meditron.corpus.decontam import build_index, read_benchmarks

        items = read_benchmarks(resolve(cfg.decontam.benchmarks_dir), cfg.decontam.benchmarks)
        if not items:
            raise DataError(f"no benchmark items found under {cfg.decontam.benchmarks_dir}; "
                            "fix decontam.benchmarks_dir or set decontam.enabled=false")
        local_fork = cfg.executor.kind == "local" and cfg.executor.start_method == "fork"
        index = build_index(items, cfg.decontam.ngram, cfg.decontam.min_words, cfg.decontam.max_items_per_ngram,
                            workers=workers if local_fork else 1)
        tmp = work / "bench_index.tmp.npz"
        index.save(tmp)
        os.replace(tmp.with_suffix(".json"), work / "bench_index.json")
        os.replace(tmp, work / "bench_index.npz")

    timings["setup"] = time.perf_counter() - t_start
    data = to_dict(cfg)
    stages = [(PrepareStage(data, str(out)), cfg.tasks), (SelectStage(data, str(out)), 1),
              (PackStage(data, str(out), threads=workers), 1), (ReportStage(data, str(out)), 1)]
    logs = work / "logs"
    _quiet_datatrove()
    if cfg.executor.kind == "local":
        for stage, tasks in stages:
            ex = make_executor(cfg, stage, tasks, workers, logs / stage.name)
            stop = threading.Event()
            bar = threading.Thread(target=_progress, args=(stage.name, logs / stage.name / "completions", tasks, stop),
                                   daemon=True)
            bar.start()
            t0 = time.perf_counter()
            try:
                ex.run()
                timings[stage.name] = time.perf_counter() - t0
            finally:
                stop.set()
                bar.join()
            missing = ex.get_incomplete_ranks(skip_completed=True)
            if missing:
                raise DataError(f"corpus stage {stage.name}: tasks {missing[:5]} failed; see {logs / stage.name}/logs "
                                "and run the same command again to resume")
    else:  # cluster executors chain by dependencies; the last one's run() submits everything
        prev = None
        for stage, tasks in stages:
            prev = make_executor(cfg, stage, tasks, workers, logs / stage.name, depends=prev)
        prev.run()
    timings["total"] = time.perf_counter() - t_start
    _write_json(work / "timings.json", {"workers": workers, "seconds": timings})   # not an output: varies per run
    return out
