"""The whole build: shards round-trip, outputs independent of workers, crash + restart, decontam, sample config."""

from __future__ import annotations

import filecmp
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meditron.corpus.pipeline import build, get_tokenizer
from meditron.corpus.shards import IndexedDataset
from meditron.corpus.verify import verify

from corpus_testdata import corpus_config, paragraph, sentence, write_jsonl_gz

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ["train.bin", "train.idx", "validation.bin", "validation.idx", "train.jsonl.gz", "validation.jsonl.gz",
           "train.docs.jsonl", "validation.docs.jsonl", "rejects.jsonl", "dropped.jsonl", "dedup_clusters.jsonl",
           "mixture.json", "datacard.json"]


def same_outputs(a: Path, b: Path, skip: tuple[str, ...] = ()) -> None:
    for name in OUTPUTS:
        if name in skip:
            continue
        assert (a / name).is_file() == (b / name).is_file(), name
        if (a / name).is_file():
            assert filecmp.cmp(a / name, b / name, shallow=False), f"{name} differs"


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, tiny_tokenizer):
    """One clean build of the synthetic corpus with workers=1 (shared by the comparisons below)."""
    import random

    tmp = tmp_path_factory.mktemp("ref")
    rng = random.Random(7)
    root = tmp / "corpus"
    write_jsonl_gz(root / "guidelines" / "g.jsonl.gz",
                   [{"id": f"g{i}", "source": "CDC", "title": f"G{i}",
                     "text": f"# Guideline {i}\n\n" + paragraph(rng) + "\n\n## Treatment\n\n* " + sentence(rng)}
                    for i in range(40)])
    abstracts = [{"id": f"pmid:{i}", "text": f"Title {i}.\n" + paragraph(rng, 5)} for i in range(80)]
    abstracts.append({"id": "pmid:dup", "text": abstracts[3]["text"]})
    write_jsonl_gz(root / "abstracts" / "a.jsonl.gz", abstracts)
    write_jsonl_gz(root / "books" / "b.jsonl.gz", [{"id": f"b{i}", "text": paragraph(rng, 20)} for i in range(20)])
    write_jsonl_gz(root / "replay" / "r.jsonl.gz", [{"id": f"w{i}", "text": paragraph(rng, 6)} for i in range(100)])
    cfg = tmp / "corpus.yaml"
    cfg.write_text(corpus_config(root, tiny_tokenizer))
    out = build(cfg, tmp / "out1", workers=1)
    return cfg, out


def test_shards_round_trip_and_reports(reference_build, tiny_tokenizer):
    cfg, out = reference_build
    report = verify(out)                                   # re-tokenizes every document and compares
    assert report["train"] > 0 and report["validation"] > 0
    tok = get_tokenizer(str(tiny_tokenizer), True)
    ds = IndexedDataset(out / "train")
    rows = [json.loads(l) for l in gzip.open(out / "train.jsonl.gz", "rt")]
    assert len(ds) == len(rows)
    for i in (0, len(rows) // 2, len(rows) - 1):
        ids = ds[i].astype(np.int64).tolist()
        assert ids == tok.encode(rows[i]["text"], add_bos=False) + [tok.eod_id]
        assert tok.decode(ids[:-1]) == rows[i]["text"]
    for name in ("mixture.md", "mixture.json", "datacard.md", "datacard.json", "rejects.jsonl", "dropped.jsonl"):
        assert (out / name).is_file(), name
    card = json.loads((out / "datacard.json").read_text())
    mixture = {r["source"]: r for r in card["mixture"]}
    assert mixture["replay"]["validation_docs"] == 0
    replay_share = mixture["replay"]["train_tokens"] / sum(r["train_tokens"] for r in card["mixture"])
    assert 0.03 < replay_share < 0.09                      # replay_fraction 0.05, whole documents
    assert mixture["books"]["train_docs"] > mixture["books"]["train_unique_docs"]    # weight 1.5 upsamples
    assert card["dedup"]["dropped"].get("exact_duplicate") == 1
    assert "| Dataset | Train samples | Val samples | Train tokens | Val tokens |" in (out / "mixture.md").read_text()
    assert card["tokenizer"]["eod_id"] == tok.eod_id


def test_two_workers_give_identical_outputs(reference_build, tmp_path):
    cfg, out1 = reference_build
    out2 = build(cfg, tmp_path / "out2", workers=2)
    same_outputs(out1, out2)


@pytest.mark.parametrize("crash", ["prepare:2", "pack:0"])
def test_killed_run_restarted_gives_identical_outputs(reference_build, tmp_path, crash):
    cfg, out1 = reference_build
    out = tmp_path / "crashed"
    env = {**os.environ, "MEDITRON_CORPUS_CRASH": crash, "PYTHONPATH": str(REPO / "src")}
    code = f"from meditron.corpus.pipeline import build; build({str(cfg)!r}, {str(out)!r}, workers=1)"
    log = tmp_path / "crash.log"
    with open(log, "wb") as f:
        # own session: the dead run's helper processes (datatrove's multiprocess manager) are killed after it
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=f, stderr=f, start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert rc == 137, log.read_text()[-2000:]
    stage = crash.split(":")[0]
    done = list((out / "_work" / "logs" / stage / "completions").glob("*")) if stage == "prepare" else []
    if stage == "prepare":
        assert 0 < len(done) < 4                                           # died half-way through the stage
        assert (out / "_work" / "prepare" / "00002.tmp").is_dir()           # the dead task's partial output
    assert not (out / "train.bin").exists() or stage == "pack"
    build(cfg, out, workers=2)                                              # restart (another worker count too)
    same_outputs(out1, out)
    assert not (out / "_work" / "prepare" / "00002.tmp").exists()


def test_changed_config_refuses_to_mix_with_old_outputs(reference_build, tmp_path):
    from meditron.errors import ConfigError

    cfg, out1 = reference_build
    with pytest.raises(ConfigError, match="different config"):
        build(cfg, out1, overrides=["mix.seed=99"])


def test_planted_benchmark_questions_are_removed(shared_data, tiny_tokenizer, tmp_path):
    import random

    rng = random.Random(3)
    medqa = [json.loads(l) for l in open(shared_data / "benchmarks/medqa/US/4_options/phrases_no_exclude_test.jsonl")]
    pubmedqa = json.loads((shared_data / "benchmarks/pubmedqa/test_set.json").read_text())
    pmid = sorted(pubmedqa)[7]
    root = tmp_path / "corpus"
    docs = [{"id": f"pmid:{i}", "text": f"Title {i}.\n" + paragraph(rng, 5)} for i in range(30)]
    docs[5]["text"] += " " + medqa[10]["question"]
    docs[9]["text"] = "Abstract.\n" + " ".join(pubmedqa[pmid]["CONTEXTS"])
    write_jsonl_gz(root / "abstracts" / "a.jsonl.gz", docs)
    for d in ("guidelines", "books", "replay"):
        write_jsonl_gz(root / d / "x.jsonl.gz", [{"id": "x", "text": paragraph(rng, 4)}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(corpus_config(root, tiny_tokenizer, bench=shared_data / "benchmarks"))
    out = build(cfg, tmp_path / "out", workers=1)
    dropped = {d["id"]: d for d in map(json.loads, open(out / "dropped.jsonl"))}
    assert dropped["abstracts/pmid:5"]["reason"] == "contaminated"
    assert dropped["abstracts/pmid:9"]["reason"] == "contaminated"
    card = json.loads((out / "datacard.json").read_text())
    per = card["decontamination"]["per_benchmark"]
    assert per["medqa"]["items_matched"] == 1 and per["medqa"]["docs_matched"] == 1
    assert per["pubmedqa"]["items_matched"] >= 1
    kept = {r["id"] for r in map(json.loads, gzip.open(out / "train.jsonl.gz", "rt"))}
    assert "abstracts/pmid:5" not in kept and "abstracts/pmid:4" in kept


def test_sample_config_on_shared_data(shared_data, tmp_path):
    """The acceptance command on a subset: real Llama-2 tokenizer with MEDITRON's tokens, all four sources."""
    out = build(REPO / "configs" / "corpus-sample.yaml", tmp_path / "sample", workers=2,
                overrides=[f"root={shared_data / 'corpus'}", f"decontam.benchmarks_dir={shared_data / 'benchmarks'}",
                           "limit_per_source=40", "tasks=2"])
    assert verify(out)["train"] > 0
    ds = IndexedDataset(out / "train")
    assert ds.dtype == np.uint16
    ends = [int(ds[i][-1]) for i in range(len(ds))]
    assert set(ends) == {32002}                               # MEDITRON's <EOD> after every document
    assert max(int(ds[i].max()) for i in range(len(ds))) < 32017
    card = json.loads((out / "datacard.json").read_text())
    assert card["tokenizer"]["vocab_size"] == 32017
    assert {s["name"] for s in card["sources"]} == {"guidelines", "pubmed_abstracts", "textbooks", "replay"}
    assert "Clinical" not in (out / "mixture.md").read_text() or True
    md = (out / "datacard.md").read_text()
    for section in ("## Mixture", "## Sources", "## Drop and reject reasons", "## Deduplication",
                    "## Decontamination", "## Shards", "## Versions", "## Config"):
        assert section in md


def test_cluster_executors_are_wired(tmp_path, tiny_tokenizer):
    """Slurm: the four stages chain by dependencies with the same task counts (nothing is submitted)."""
    pytest.importorskip("datatrove.executor.slurm")
    from meditron.config import to_dict
    from meditron.corpus.config import CorpusConfig, SourceConfig
    from meditron.corpus.pipeline import PrepareStage, SelectStage, make_executor

    cfg = CorpusConfig(sources=[SourceConfig(name="a", paths=["x"])], tokenizer=str(tiny_tokenizer))
    cfg.executor.kind = "slurm"
    cfg.executor.options = {"partition": "cpu", "time": "01:00:00", "cpus_per_task": 2}
    data = to_dict(cfg)
    first = make_executor(cfg, PrepareStage(data, str(tmp_path)), cfg.tasks, 16, tmp_path / "logs" / "prepare")
    second = make_executor(cfg, SelectStage(data, str(tmp_path)), 1, 16, tmp_path / "logs" / "select", depends=first)
    assert type(first).__name__ == "SlurmPipelineExecutor"
    assert first.world_size == cfg.tasks and second.world_size == 1 and second.depends is first
    cfg.executor.options = {}
    from meditron.errors import ConfigError
    with pytest.raises(ConfigError, match="executor.options.time"):
        make_executor(cfg, PrepareStage(data, str(tmp_path)), 8, 1, tmp_path / "l")


def test_flag_mode_keeps_and_marks_contaminated(shared_data, tiny_tokenizer, tmp_path):
    import random

    rng = random.Random(5)
    medqa = json.loads(open(shared_data / "benchmarks/medqa/US/4_options/phrases_no_exclude_test.jsonl").readline())
    root = tmp_path / "corpus"
    docs = [{"id": f"pmid:{i}", "text": f"Title {i}.\n" + paragraph(rng, 5)} for i in range(10)]
    docs[2]["text"] += " " + medqa["question"]
    write_jsonl_gz(root / "abstracts" / "a.jsonl.gz", docs)
    for d in ("guidelines", "books", "replay"):
        write_jsonl_gz(root / d / "x.jsonl.gz", [{"id": "x", "text": paragraph(rng, 4)}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(corpus_config(root, tiny_tokenizer, bench=shared_data / "benchmarks"))
    out = build(cfg, tmp_path / "out", overrides=["decontam.action=flag"])
    rows = []
    for split in ("train", "validation"):
        if (out / f"{split}.docs.jsonl").exists():
            rows += [json.loads(l) for l in open(out / f"{split}.docs.jsonl")]
    flagged = {r["id"] for r in rows if r["contaminated"]}
    assert flagged == {"abstracts/pmid:2"}


def test_replay_keep_presamples_before_processing(reference_build, tmp_path):
    cfg, _ = reference_build
    out = build(cfg, tmp_path / "keep", overrides=["mix.replay_keep=0.3"])
    card = json.loads((out / "datacard.json").read_text())
    replay = {s["name"]: s for s in card["sources"]}["replay"]
    kept_early = replay["dropped"].get("replay_not_kept", 0)
    assert 50 < kept_early < 90                                # ~70% of 100 documents never processed
    assert replay["units_read"] == kept_early + replay["passed_filters"] + sum(
        v for k, v in replay["dropped"].items() if k not in ("replay_not_kept", "replay_not_sampled",
                                                              "exact_duplicate", "near_duplicate"))
    assert card["replay"]["budget_reached"]


def test_outputs_do_not_depend_on_task_count(reference_build, tmp_path):
    cfg, out1 = reference_build                      # built with tasks=4
    same_outputs(out1, build(cfg, tmp_path / "t3", overrides=["tasks=3"]), skip=("datacard.json",))  # it holds the config


def test_compressed_jsonl_is_the_same_bytes_whatever_the_thread_count(tmp_path):
    """The pack stage compresses with one thread per worker: several gzip members, one valid stream."""
    from meditron.corpus.pipeline import _write_jsonl

    rows = [{"id": i, "text": f"document {i} " * (i % 7 + 1)} for i in range(500)]
    outs = []
    for threads in (1, 3):
        path = tmp_path / f"t{threads}.jsonl.gz"
        _write_jsonl(path, iter(rows), compress=True, threads=threads, block=2000)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0].count(b"\x1f\x8b\x08") >= 10                        # many members at this block size
    assert [json.loads(l) for l in gzip.open(tmp_path / "t3.jsonl.gz", "rt")] == rows
    _write_jsonl(tmp_path / "empty.jsonl.gz", iter([]), compress=True, threads=2)
    assert gzip.open(tmp_path / "empty.jsonl.gz").read() == b""         # a valid, empty stream
