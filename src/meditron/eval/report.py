"""Results from predictions: accuracy per seed, mean ± std, bootstrap CI, groups, ECE; Markdown table."""

from __future__ import annotations

import platform
from collections import defaultdict
from typing import Any

from meditron import __version__
from meditron.eval.published import published, published_groups
from meditron.eval.scoring import bootstrap_ci, ece, mean_std


def _acc(recs: list[dict], field: str = "correct") -> float:
    return sum(bool(r.get(field)) for r in recs) / len(recs) if recs else float("nan")


def compute_results(cfg, plans, records: dict, timing: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "meditron_version": __version__,
        "config": {k: getattr(cfg, k) for k in ("model", "mode", "shots", "seeds", "prompt_style", "backend",
                                               "data_dir", "limit", "per_subject", "sc_samples", "sc_temperature")},
        "machine": platform.processor() or platform.machine(),
        "benchmarks": {},
        "timing": dict(timing or {}),
    }
    scored = cfg.mode in ("top-token", "loglik")
    for p in plans:
        name = p.bench.name
        recs = [records[(name, it.id, s)] for s in p.seeds for it in p.items if (name, it.id, s) in records]
        if not recs:
            continue
        by_seed: dict[int, list[dict]] = defaultdict(list)
        by_item: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            by_seed[r["seed"]].append(r)
            by_item[r["id"]].append(r)
        seed_acc = {s: _acc(v) for s, v in by_seed.items()}
        mean, std = mean_std(list(seed_acc.values()))
        per_item = [_acc(v) for v in by_item.values()]  # averaged over seeds, resampled by item
        lo, hi = bootstrap_ci(per_item)
        res: dict[str, Any] = {
            "title": p.bench.title, "n": len(p.items), "shots": p.shots, "seeds": p.seeds,
            "complete": len(recs) == len(p.items) * len(p.seeds),
            "accuracy": mean, "std": std, "per_seed": {str(s): a for s, a in seed_acc.items()}, "ci95": [lo, hi],
            "unparseable": sum(r.get("parse") == "unparseable" for r in recs) / len(recs),
            "notes": p.notes, "paper": published(name, cfg.mode),
        }
        if cfg.mode == "loglik":
            res["acc_norm"] = mean_std([_acc(v, "correct_norm") for v in by_seed.values()])[0]
        if scored:
            res["ece"] = ece([r["conf"] for r in recs], [float(r["correct"]) for r in recs])
        else:
            res["accuracy_meditron_parser"] = _acc(recs, "correct_meditron")
        preds = defaultdict(int)
        for r in recs:
            preds[r.get("pred")] += 1
        res["pred_distribution"] = {str(k): v / len(recs) for k, v in sorted(preds.items(), key=lambda kv: -kv[1])}
        if p.bench.group_name and any(r.get("group") for r in recs):
            groups: dict[str, list[dict]] = defaultdict(list)
            for r in recs:
                groups[r.get("group") or "?"].append(r)
            res["group_name"] = p.bench.group_name
            res["groups"] = {g: {"n": len(v) // len(p.seeds), "accuracy": _acc(v)} for g, v in sorted(groups.items())}
            res["paper_groups"] = published_groups(name)
            if name == "truthfulqa_medical":  # the paper's Avg is the unweighted mean of categories
                res["category_mean"] = sum(g["accuracy"] for g in res["groups"].values()) / len(res["groups"])
        out["benchmarks"][name] = res
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def render_markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    mode = cfg["mode"]
    lines = [
        f"### meditron eval: {cfg['model']} · mode {mode} · prompt {cfg['prompt_style']} · backend {cfg['backend']}",
        "",
    ]
    loglik = mode == "loglik"
    scored = mode in ("top-token", "loglik")
    head = ["Benchmark", "n", "shots", "seeds", "accuracy (mean ± std)", "95% CI"]
    if loglik:
        head.append("acc_norm")
    head += ["ECE"] if scored else ["unparseable", "acc (MEDITRON parser)"]
    paper_models = sorted({m for b in results["benchmarks"].values() for m in b["paper"]})
    head += [f"{m} (paper)" for m in paper_models]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, b in results["benchmarks"].items():
        row = [name + ("" if b["complete"] else " (partial)"), str(b["n"]), str(b["shots"]), str(len(b["seeds"])),
               f"{_pct(b['accuracy'])} ± {_pct(b['std'])}", f"{_pct(b['ci95'][0])}–{_pct(b['ci95'][1])}"]
        if loglik:
            row.append(_pct(b.get("acc_norm")))
        row += [f"{b['ece']:.3f}"] if scored else [_pct(b["unparseable"]), _pct(b.get("accuracy_meditron_parser"))]
        row += [f"{b['paper'][m]['value']:.1f}" if m in b["paper"] else "–" for m in paper_models]
        lines.append("| " + " | ".join(row) + " |")
    for name, b in results["benchmarks"].items():
        if not b.get("groups"):
            continue
        pm = sorted(b.get("paper_groups", {}))
        lines += ["", f"**{name}** per {b['group_name']}", "",
                  "| " + " | ".join([b["group_name"], "n", "accuracy"] + [f"{m} (paper)" for m in pm]) + " |",
                  "|" + "---|" * (3 + len(pm))]
        for g, v in b["groups"].items():
            cells = [g, str(v["n"]), _pct(v["accuracy"])]
            cells += [f"{b['paper_groups'][m][g]:.1f}" if g in b["paper_groups"][m] else "–" for m in pm]
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for name, b in results["benchmarks"].items():
        notes += [f"{name}: {n}" for n in b["notes"]]
        if b["paper"]:
            src = sorted({v["source"] for v in b["paper"].values()})
            notes.append(f"{name}: paper numbers from {'; '.join(src)}")
        if b.get("paper_groups"):
            notes.append(f"{name}: per-{b['group_name']} paper numbers from "
                         + ("Table 13 (top-token)" if name == "truthfulqa_medical" else "Table 12 (fine-tuned, top-token)"))
        dist = b.get("pred_distribution") or {}
        if dist:
            top, share = next(iter(dist.items()))
            if share > 0.5:
                notes.append(f"{name}: the model predicts {top} for {100 * share:.0f}% of questions")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    t = results.get("timing", {})
    if t.get("run_s") is not None:
        lines += ["", f"_{t.get('questions_run', 0)} questions run in {t['run_s']:.0f} s"
                  + (f" (model load {t['load_s']:.0f} s)" if t.get("load_s") else "") + "._"]
    return "\n".join(lines) + "\n"
