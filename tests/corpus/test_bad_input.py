"""Malformed inputs are counted and written to rejects.jsonl with a reason; a bad config is one line."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meditron.corpus.pipeline import build
from meditron.errors import ConfigError

GOOD = "Fever and cough are common symptoms of respiratory infection in adults and children alike. " * 3
GOOD2 = ("Second good document: chronic kidney disease progresses slowly, and blood pressure control with "
         "angiotensin blockade delays dialysis in most patients followed for several years.")
GOOD4 = ("General knowledge: the Danube flows through ten countries before it reaches the Black Sea, "
         "passing Vienna, Bratislava, Budapest and Belgrade on the way.")
GOOD3 = ("Influenza vaccination each autumn is advised for older people, pregnant women and health workers; "
         "antivirals shorten illness when started within two days of the first symptoms.")


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica (hand-assembled, with a correct xref table)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


PUBMED_XML = """<?xml version="1.0"?>
<PubmedArticleSet>
<PubmedArticle><MedlineCitation><PMID>111</PMID><Article><ArticleTitle>Statins in the elderly.</ArticleTitle>
<Abstract><AbstractText Label="BACKGROUND">Statins lower cholesterol in older adults with cardiovascular risk factors.</AbstractText>
<AbstractText Label="RESULTS">Mortality fell by a fifth over five years of follow up in the treated group.</AbstractText></Abstract>
<Language>eng</Language></Article></MedlineCitation></PubmedArticle>
<PubmedArticle><MedlineCitation><PMID>222</PMID><Article><ArticleTitle>Title only.</ArticleTitle></Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""


@pytest.fixture
def bad_corpus(tmp_path) -> Path:
    root = tmp_path / "bad"
    (root / "jsonl").mkdir(parents=True)
    lines = [json.dumps({"id": "ok1", "text": GOOD}).encode(),
             b'{"id": "broken", "text": "unterminated',
             json.dumps({"id": "latin1", "text": "caf\u00e9 " + GOOD}, ensure_ascii=False).encode("utf-8").replace(b"\xc3\xa9", b"\xe9"),
             b'["a", "list"]',
             json.dumps({"id": "empty", "text": "   "}).encode(),
             json.dumps({"id": "huge", "text": "word " * 3000}).encode(),
             json.dumps({"id": "num", "text": 42}).encode(),
             json.dumps({"id": "ok2", "text": GOOD2}).encode()]
    with gzip.open(root / "jsonl" / "a.jsonl.gz", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    rng = random.Random(0)
    words = "alpha beta gamma delta renal hepatic cardiac pulmonary dose trial cohort risk".split()
    full = gzip.compress(b"".join(json.dumps({"id": f"t{i}", "text": " ".join(rng.choice(words) for _ in range(40))}
                                             ).encode() + b"\n" for i in range(200)))
    (root / "jsonl" / "truncated.jsonl.gz").write_bytes(full[: len(full) // 2])
    mixed = root / "mixed"
    mixed.mkdir()
    (mixed / "page.html").write_text("<html><head><title>Flu advice</title></head><body><nav>Home | About</nav>"
                                     f"<article><h1>Influenza</h1><p>{GOOD3}</p></article></body></html>")
    (mixed / "leaflet.pdf").write_bytes(minimal_pdf("Wash your hands often to prevent the spread of infection "
                                                    "in hospitals and clinics across the country every day"))
    (mixed / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (mixed / "notes.docx").write_bytes(b"PK\x03\x04 binary")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": ["pq1", "pq2"], "text": [GOOD4, None]}), mixed / "replay.parquet")
    (mixed / "pubmed.xml.gz").write_bytes(gzip.compress(PUBMED_XML.encode()))
    cut = gzip.compress(PUBMED_XML.encode())
    (mixed / "pubmed_cut.xml.gz").write_bytes(cut[: len(cut) - 40])
    return root


def _config(root: Path, tok: Path, path: Path) -> Path:
    cfg = {"root": str(root), "tasks": 3, "tokenizer": str(tok),
           "sources": [{"name": "j", "type": "jsonl", "paths": ["jsonl/*.gz"]},
                       {"name": "mixed", "type": "auto", "paths": ["mixed/*"]}],
           "language": {"enabled": False}, "length": {"min_chars": 20, "max_chars": 10000},
           "decontam": {"enabled": False}, "mix": {"replay_fraction": 0.0}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_malformed_inputs_land_in_rejects(bad_corpus, tiny_tokenizer, tmp_path):
    out = build(_config(bad_corpus, tiny_tokenizer, tmp_path / "c.yaml"), tmp_path / "out", workers=1)
    rejects = [json.loads(l) for l in open(out / "rejects.jsonl")]
    by_id = {(r["file"].split("/")[-1], r["reason"]) for r in rejects}
    for expected in [("a.jsonl.gz", "malformed_json"), ("a.jsonl.gz", "bad_encoding"), ("a.jsonl.gz", "not_an_object"),
                     ("a.jsonl.gz", "empty_document"), ("a.jsonl.gz", "huge_document"), ("a.jsonl.gz", "bad_text_type"),
                     ("truncated.jsonl.gz", "truncated_or_corrupt_gzip"), ("notes.docx", "unknown_source_type"),
                     ("broken.pdf", "unreadable_pdf"), ("pubmed.xml.gz", "no_abstract"),
                     ("pubmed_cut.xml.gz", "truncated_or_corrupt_gzip"), ("replay.parquet", "empty_document")]:
        assert expected in by_id, expected
    assert all(r["reason"] and "where" in r for r in rejects)
    card = json.loads((out / "datacard.json").read_text())
    srcs = {s["name"]: s for s in card["sources"]}
    # nothing silent: every unit read is either rejected, dropped, or passed the filters
    for s in srcs.values():
        assert s["units_read"] == sum(s["rejected"].values()) + sum(
            v for k, v in s["dropped"].items() if k not in ("exact_duplicate", "near_duplicate", "replay_not_sampled")
        ) + s["passed_filters"]
    assert card["rejects_total"] == len(rejects)
    texts = [json.loads(l) for l in gzip.open(out / "train.jsonl.gz", "rt")]
    ids = {t["id"] for t in texts}
    assert {"j/ok1", "j/ok2", "mixed/pmid:111", "mixed/pq1"} <= ids
    assert any(i.startswith("j/t") for i in ids)                       # lines before the gzip cut were kept
    html = [t for t in texts if t["id"].endswith("page.html")]
    assert html and "Influenza" in html[0]["text"] and "Home | About" not in html[0]["text"]
    pdf = [t for t in texts if t["id"].endswith("leaflet.pdf")]
    assert pdf and "Wash your hands" in pdf[0]["text"]
    pub = [t for t in texts if t["id"] == "mixed/pmid:111"][0]["text"]
    assert pub.startswith("Statins in the elderly.\nBACKGROUND: Statins")


@pytest.mark.parametrize("override, message", [
    ("sources=[]", "no `sources`"),
    ("tasks=0", "tasks must be >= 1"),
    ("dedup.bands=zero", "dedup.bands"),
    ("decontam.action=maybe", "decontam.action"),
    ("bogus_key=1", "unknown config key 'bogus_key'"),
    ("rules_file=/nonexistent/rules.yaml", "rules_file '/nonexistent/rules.yaml' is not a file"),  # before any work
])
def test_bad_config_is_one_line_error(bad_corpus, tiny_tokenizer, tmp_path, override, message):
    cfg = _config(bad_corpus, tiny_tokenizer, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        build(cfg, tmp_path / "out", overrides=[override])


def test_unknown_source_type_and_missing_files_are_config_errors(bad_corpus, tiny_tokenizer, tmp_path):
    cfg = _config(bad_corpus, tiny_tokenizer, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="type 'docx' is unknown"):
        build(cfg, tmp_path / "o1", config=_with(cfg, lambda d: d["sources"][0].update(type="docx")))
    with pytest.raises(ConfigError, match="match no file"):
        build(cfg, tmp_path / "o2", config=_with(cfg, lambda d: d["sources"][0].update(paths=["nope/*.gz"])))


def test_a_replay_source_takes_neither_a_validation_split_nor_a_weight(bad_corpus, tiny_tokenizer, tmp_path):
    cfg = _config(bad_corpus, tiny_tokenizer, tmp_path / "c.yaml")
    for key, value, message in (("val_fraction", 0.1, "has no validation split"),
                                ("weight", 2.0, "does not apply to a replay source")):
        changed = _with(cfg, lambda d: d["sources"][0].update(role="replay", **{key: value}))   # a valid config...
        with pytest.raises(ConfigError, match=message):                                       # ...no new build
            build(cfg, tmp_path / key, config=changed)
        assert not (tmp_path / key).exists()


def test_rules_file_is_checked_before_any_work_and_read_relative_to_the_caller(bad_corpus, tiny_tokenizer, tmp_path,
                                                                               monkeypatch):
    cfg = _config(bad_corpus, tiny_tokenizer, tmp_path / "c.yaml")
    (tmp_path / "bad.yaml").write_text("acme:\n  stopers: [x]\n")
    with pytest.raises(ConfigError, match="unknown key 'stopers'"):
        build(cfg, tmp_path / "o1", overrides=[f"rules_file={tmp_path / 'bad.yaml'}"])
    assert not (tmp_path / "o1").exists()
    (tmp_path / "rules.yaml").write_text("acme:\n  stoppers: [References]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MY_RULES", "rules.yaml")
    assert build(cfg, tmp_path / "o2", overrides=["rules_file=${MY_RULES}"]).is_dir()   # relative, via ${VAR}
    monkeypatch.setenv("MY_RULES", "")
    assert build(cfg, tmp_path / "o3", overrides=["rules_file=${MY_RULES:-}"]).is_dir()  # empty: packaged rules
    # the rules file's contents are part of the build's identity: an edited file does not resume o2
    (tmp_path / "rules.yaml").write_text("acme:\n  stoppers: [Acknowledgments]\n")
    monkeypatch.setenv("MY_RULES", "rules.yaml")
    with pytest.raises(ConfigError, match="different config"):
        build(cfg, tmp_path / "o2", overrides=["rules_file=${MY_RULES}"])


def _with(cfg_path: Path, change):
    from meditron.config import from_dict
    from meditron.corpus.config import CorpusConfig, validate

    data = yaml.safe_load(cfg_path.read_text())
    change(data)
    return validate(from_dict(CorpusConfig, data))


def test_cli_bad_config_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: x, type: nonsense, paths: [a]}]\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    r = subprocess.run([sys.executable, "-m", "meditron", "corpus", "build", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "type 'nonsense' is unknown" in r.stderr
