"""Each cleaning rule on hand-written cases (MEDITRON.md §3.1), and the fixed bugs."""

from __future__ import annotations

import pytest

from meditron.corpus import clean as C


def test_remove_urls():
    assert C.remove_urls("See https://www.cdc.gov/std/tg2015/default.htm for more.") == "See  for more."
    assert C.remove_urls("http://x.org/a?b=1&c=2 done") == " done"
    assert C.remove_urls("no link here") == "no link here"


def test_remove_references_citations_and_tags():
    assert C.remove_references("Aspirin reduces risk [12].") == "Aspirin reduces risk ."
    assert C.remove_references("as shown [Smith 2001, Jones 2003] here") == "as shown  here"
    assert C.remove_references("<b>bold</b> text<br/>") == "bold text"


def test_remove_references_keeps_comparisons_bug_fixed():
    text = "mortality was lower (p<0.05) in lesions >2 cm"
    assert C.remove_references(text) == text                       # fixed
    assert C.remove_references(text, legacy=True) == "mortality was lower (p2 cm"   # MEDITRON's regex


def test_remove_references_markdown_link_keeps_text():
    assert C.remove_references("see [the CDC page](https://cdc.gov) now") == "see the CDC page now"
    assert C.remove_references("see [the CDC page](https://cdc.gov) now", legacy=True) == "see  now"


def test_normalize_lists_bullets():
    text = "Items:\n* one\n• two\n\uf0b7three\n+ four\no five"
    assert C.normalize_lists(text) == "Items:\n- one\n- two\n-three\n- four\n- five"


def test_normalize_lists_o_word_bug_fixed():
    text = "Risk factors:\nobesity is common\noften missed"
    assert C.normalize_lists(text) == text
    assert C.normalize_lists(text, legacy=True) == "Risk factors:\n-besity is common\n-ften missed"


def test_normalize_lists_star_mid_line_bug_fixed():
    assert C.normalize_lists("dose 2 * 3 mg") == "dose 2 * 3 mg"
    assert C.normalize_lists("dose 2 * 3 mg", legacy=True) == "dose 2 - 3 mg"


def test_remove_weird_chars():
    assert C.remove_weird_chars("◆ **Bold** ▪ item ■□\n> quote\ufffd") == " Bold  item \n quote"


def test_normalize_sections_shift_and_cap():
    text = "Intro\n### A\ntext\n#### B\n##### C\n###### D"
    assert C.normalize_sections(text) == "Intro\n# A\ntext\n## B\n### C\n### D"


def test_normalize_sections_header_at_start_bug_fixed():
    assert C.normalize_sections("## Title\ntext\n### Sub") == "# Title\ntext\n## Sub"
    assert C.normalize_sections("no headers") == "no headers"


def test_normalize_newlines():
    text = "Title\n\n\n1234\n---\nParagraph one.\n\n# Header\nBody"
    assert C.normalize_newlines(text) == "Title\nParagraph one.\n\n# Header\nBody\n"


def test_clean_common_order_and_result():
    raw = ("## Treatment\n\nSee https://cdc.gov/x for details [3].\n* Give <i>doxycycline</i> 100 mg\n"
           "obesity increases risk\n12\n### Dosing\n• twice daily")
    out = C.clean_common(raw)
    assert out == ("# Treatment\nSee  for details .\n- Give doxycycline 100 mg\nobesity increases risk\n\n"
                   "## Dosing\n- twice daily")


def test_truncate_starters_removers_stoppers():
    text = "Menu\nCookie banner\n## Key recommendations\nDo this.\n[link] junk\nAnd that.\nReferences\n1. Smith"
    out = C.truncate(text, starters=["key recommendations"], removers=["["], stoppers=["references"])
    assert out == "## Key recommendations\nDo this.\nAnd that."


def test_clean_guideline_rules_as_data(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("acme:\n  stoppers: [acknowledg]\n  min_line_words: 3\n  min_long_lines: 1\n")
    table = C.load_rules(str(rules))
    text = "# Intro\nShort line\nThis is a sufficiently long line with more than ten words in it for sure.\nAcknowledgments\nThanks all"
    out, why = C.clean_text(text, "guidelines", "ACME", str(rules))
    assert why == "" and out == "# Intro\nThis is a sufficiently long line with more than ten words in it for sure."
    out, why = C.clean_guideline("# Intro\nOnly short lines here.", table["acme"])
    assert out is None and why == "too_few_long_lines"


def test_rules_file_unknown_key_is_one_line_error(tmp_path):
    from meditron.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("acme:\n  stopers: [x]\n")
    with pytest.raises(ConfigError, match="unknown key 'stopers'"):
        C.load_rules(str(bad))


@pytest.mark.parametrize("text, message", [
    ("acme: [unclosed\n", "is not valid YAML"),
    ("- acme\n", "must map source names to their rules, not a list"),
    ("acme: 3\n", "must be a mapping of rule keys"),
    ("acme:\n  stoppers: References\n", "stoppers must be a list of strings"),
    ("acme:\n  min_lines: many\n", "min_lines must be an integer"),
])
def test_malformed_rules_file_is_one_line_error(tmp_path, text, message):
    from meditron.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=message):
        C.load_rules(str(bad))


def test_an_edited_rules_file_is_read_again(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("acme:\n  stoppers: [References]\n")
    assert C.load_rules(str(rules))["acme"].stoppers == ["References"]
    rules.write_text("acme:\n  stoppers: [Acknowledgments, Funding]\n")
    assert C.load_rules(str(rules))["acme"].stoppers == ["Acknowledgments", "Funding"]


def test_packaged_rules_load():
    rules = C.load_rules("")
    assert {"cdc", "nice" if "nice" in rules else "cco", "cma"} <= set(rules)
    assert "acknowledg" in rules["cdc"].stoppers


def test_clean_abstract():
    out = C.clean_abstract("Title.\nWe found X [1] (see http://a.org/b).\r\n\n\n\nEnd.")
    assert out == "Title.\nWe found X  (see ).\n\nEnd."
