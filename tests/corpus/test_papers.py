"""S2ORC rendering on a hand-written annotated paper, and the PMC JATS renderer (MEDITRON.md §3.2)."""

from __future__ import annotations

import json

import pytest

from meditron.corpus.sources import Reject
from meditron.corpus.sources.jats import render_file
from meditron.corpus.sources.s2orc import render


def _span(text: str, sub: str, start_at: int = 0, **attrs) -> dict:
    i = text.index(sub, start_at)
    d = {"start": i, "end": i + len(sub)}
    if attrs:
        d["attributes"] = attrs
    return d


def annotated_paper() -> dict:
    text = (
        "Jane Doe Department of Medicine, Springfield University\n"
        "Abstract\n"
        "We studied aspirin in adults.\n"
        "INTRODUCTION\n"
        "Aspirin lowers risk (Smith et al., 2001) and has side effects [2]. See Fig. 1 for the design.\n"
        "Statistical model of outcomes\n"
        "The dose was modelled as E = mc^2 here.\n"
        "Fig. 1\nFigure 1. Study design of the randomized trial. Patients were screened first.\n"
        "Table 1\nTable 1: Baseline characteristics.\n"
        "References\n"
        "Aspirin for the primary prevention of cardiovascular events in adults over fifty years old. Smith J, Lee K. NEJM 2001.\n"
    )
    ann = {
        "author": [_span(text, "Jane Doe")],
        "authoraffiliation": [_span(text, "Department of Medicine, Springfield University")],
        "abstract": [_span(text, "We studied aspirin in adults.")],
        "sectionheader": [_span(text, "INTRODUCTION"), _span(text, "Statistical model of outcomes")],
        "bibref": [_span(text, "Smith et al., 2001", ref_id="b0"), _span(text, "[2]")],
        "figureref": [_span(text, "Fig. 1", ref_id="fig_0")],
        "formula": [_span(text, "E = mc^2")],
        "figure": [_span(text, "Fig. 1\nFigure 1. Study design of the randomized trial. Patients were screened first.",
                         text.index("Fig. 1\n"), id="fig_0"),
                   _span(text, "Table 1\nTable 1: Baseline characteristics.", id="tab_0")],
        "figurecaption": [_span(text, "Figure 1. Study design of the randomized trial. Patients were screened first."),
                          _span(text, "Table 1: Baseline characteristics.")],
        "bibentry": [_span(text, "Aspirin for the primary prevention of cardiovascular events in adults over fifty "
                                 "years old. Smith J, Lee K. NEJM 2001.", id="b0")],
        "bibtitle": [_span(text, "Aspirin for the primary prevention of cardiovascular events in adults over fifty years old")],
        "bibauthorlastname": [_span(text, "Smith", text.index("References"))],
    }
    # S2ORC stores each annotation list as a JSON string
    return {"corpusid": 42, "title": "Aspirin in adults",
            "content": {"text": text, "annotations": {k: json.dumps(v) for k, v in ann.items()}}}


def test_s2orc_render_meditron_format():
    out = render(annotated_paper())
    expected = (
        "Aspirin in adults\n\n"
        "We studied aspirin in adults.\n\n"
        "# Introduction\n"
        "Aspirin lowers risk [bib_ref] Aspirin for the primary prevention of cardiovascular events in adults over fifty..., "
        "Smith [/bib_ref] and has side effects . See [fig_ref] Figure 1: Study design of the randomized trial "
        "[/fig_ref] for the design.\n\n"
        "## Statistical model of outcomes\n"
        "The dose was modelled as\n[formula] E = mc^2 [/formula]\nhere.\n"
        "[fig] Figure 1: Study design of the randomized trial. Patients were screened first. [/fig]\n"
        "[table] Table 1: Baseline characteristics. [/table]"
    )
    assert out == expected


def test_s2orc_unresolved_reference_dropped_and_author_removed():
    out = render(annotated_paper())
    assert "Jane Doe" not in out and "Springfield" not in out      # authors / header removed
    assert "References" not in out and "NEJM" not in out           # bibliography removed


def test_s2orc_bad_records_are_rejects():
    with pytest.raises(Reject, match="missing_text"):
        render({"corpusid": 1})
    with pytest.raises(Reject, match="empty_document"):
        render({"content": {"text": "   ", "annotations": {}}})


JATS = """<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink">
 <front><article-meta>
  <article-id pub-id-type="pmc">PMC123</article-id>
  <title-group><article-title>Vitamin D and bones</article-title></title-group>
  <abstract><p>Vitamin D matters.</p></abstract>
 </article-meta></front>
 <body>
  <sec><title>INTRODUCTION</title>
   <p>Bones need vitamin D <xref ref-type="bibr" rid="R1">1</xref>, see <xref ref-type="fig" rid="F1">Figure 1</xref>.</p>
   <disp-formula><tex-math>y = ax + b</tex-math></disp-formula>
   <sec><title>Cohort details</title><p>We enrolled 100 adults.</p></sec>
  </sec>
  <fig id="F1"><label>Fig. 1</label><caption><p>Bone density by dose. Higher is better.</p></caption></fig>
  <table-wrap id="T1"><label>Table 1</label><caption><p>Baseline.</p></caption></table-wrap>
 </body>
 <back><ref-list><ref id="R1"><element-citation><person-group><name><surname>Holick</surname></name></person-group>
  <article-title>Vitamin D deficiency</article-title></element-citation></ref></ref-list></back>
</article>"""


def test_jats_render(tmp_path):
    p = tmp_path / "a.nxml"
    p.write_text(JATS)
    rid, title, text = render_file(p)
    assert rid == "pmc:PMC123" and title == "Vitamin D and bones"
    assert text == (
        "Vitamin D and bones\n\n# Abstract\nVitamin D matters.\n\n# Introduction\n"
        "Bones need vitamin D [bib_ref] Vitamin D deficiency, Holick [/bib_ref], see [fig_ref] Figure 1: Bone density by dose "
        "[/fig_ref].\n[formula] y = ax + b [/formula]\n\n## Cohort details\nWe enrolled 100 adults.\n"
        "[fig] Figure 1: Bone density by dose. Higher is better. [/fig]\n[table] Table 1: Baseline. [/table]"
    )


def test_jats_malformed_is_reject(tmp_path):
    p = tmp_path / "bad.xml"
    p.write_text("<article><body><p>unclosed</body>")
    with pytest.raises(Reject, match="malformed_xml"):
        render_file(p)


def test_s2orc_jsonl_through_the_reader(tmp_path):
    from meditron.corpus.config import SourceConfig
    from meditron.corpus.sources import Doc, read_source

    path = tmp_path / "s2orc.jsonl"
    path.write_text(json.dumps(annotated_paper()) + "\n" + json.dumps({"corpusid": 7}) + "\n")
    src = SourceConfig(name="papers", type="s2orc", paths=["s2orc.jsonl"], id_field="corpusid")
    got = list(read_source(src, [path], tmp_path))
    assert isinstance(got[0][2], Doc) and got[0][2].id == "42" and got[0][2].text.startswith("Aspirin in adults")
    assert isinstance(got[1][2], Reject) and got[1][2].reason == "missing_text"
