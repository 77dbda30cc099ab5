"""MEDITRON's published numbers (paper tables, MEDITRON.md §5), shown beside ours."""

from __future__ import annotations

# Table 4: pretrained, in-context (3-shot 7B, 5-shot 70B), mean over 3 seeds
PRETRAINED = {
    "MEDITRON-7B": {"mmlu_medical": 42.3, "pubmedqa": 69.3, "medmcqa": 36.3, "medqa": 28.7, "medqa4": 37.4},
    "MEDITRON-70B": {"mmlu_medical": 71.5, "pubmedqa": 79.8, "medmcqa": 53.3, "medqa": 52.0, "medqa4": 59.8},
}
# Table 5: fine-tuned per task
FINETUNED = {
    "top-token": {
        "MEDITRON-7B": {"mmlu_medical": 55.6, "pubmedqa": 74.4, "medmcqa": 59.2, "medqa": 47.9, "medqa4": 52.0},
        "MEDITRON-70B": {"mmlu_medical": 73.6, "pubmedqa": 80.0, "medmcqa": 65.1, "medqa": 60.7, "medqa4": 65.4},
    },
    "cot": {"MEDITRON-70B": {"mmlu_medical": 74.9, "pubmedqa": 81.0, "medmcqa": 63.2, "medqa": 61.5, "medqa4": 67.8}},
    "sc-cot": {"MEDITRON-70B": {"mmlu_medical": 77.6, "pubmedqa": 81.6, "medmcqa": 66.0, "medqa": 64.4, "medqa4": 70.2}},
}
# Table 13: TruthfulQA top-token (1-shot 7B, 0-shot 70B); Avg = unweighted mean of the categories
TRUTHFULQA = {
    "MEDITRON-7B": {"Health": 27.3, "Nutrition": 31.3, "Psychology": 21.1, "Science": 33.3, "_avg": 28.3},
    "MEDITRON-70B": {"Health": 81.8, "Nutrition": 77.9, "Psychology": 47.4, "Science": 77.8, "_avg": 71.2},
}
# Table 12: MMLU-Medical per subject, fine-tuned, top-token
_SUBJ = ("anatomy", "college_biology", "college_medicine", "professional_medicine", "medical_genetics", "virology",
         "clinical_knowledge", "high_school_biology", "nutrition")
MMLU_SUBJECTS = {
    "MEDITRON-7B": dict(zip(_SUBJ, (49.3, 53.8, 44.8, 55.4, 64.6, 38.2, 57.2, 62.5, 63.6))),
    "MEDITRON-70B": dict(zip(_SUBJ, (62.7, 82.5, 62.8, 77.9, 77.8, 50.0, 72.3, 86.4, 76.4))),
}


def published(benchmark: str, mode: str) -> dict[str, dict[str, float | str]]:
    """{model: {"value": x, "source": "..."}} for the paper cells closest to this benchmark and mode."""
    out: dict[str, dict] = {}
    if benchmark == "truthfulqa_medical":
        for m, row in TRUTHFULQA.items():
            out[m] = {"value": row["_avg"], "source": "Table 13, top-token (1-shot 7B / 0-shot 70B)"}
        return out
    if mode in ("cot", "sc-cot"):
        for m, row in FINETUNED[mode].items():
            if benchmark in row:
                out[m] = {"value": row[benchmark], "source": f"Table 5, fine-tuned, {mode.upper()}"}
        return out
    for m, row in PRETRAINED.items():
        if benchmark in row:
            out[m] = {"value": row[benchmark], "source": "Table 4, pretrained in-context (3-shot 7B / 5-shot 70B)"}
    return out


def published_groups(benchmark: str) -> dict[str, dict[str, float]]:
    if benchmark == "mmlu_medical":
        return MMLU_SUBJECTS
    if benchmark == "truthfulqa_medical":
        return {m: {k: v for k, v in row.items() if not k.startswith("_")} for m, row in TRUTHFULQA.items()}
    return {}
