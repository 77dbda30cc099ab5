"""MEDITRON's text cleaning (MEDITRON.md §3.1-3.2, `guidelines/clean.py`), with its known bugs fixed.

The common guideline cleaning runs, in MEDITRON's order: remove_urls, remove_references,
normalize_lists, remove_weird_chars, normalize_sections, normalize_newlines. Per-source
truncation rules (starters / removers / stoppers, short-line and long-line filters) are data:
`rules/guidelines.yaml`, or any YAML given as `rules_file`.

Bugs fixed (each reproducible with `legacy=True` for comparisons):
  1. a line starting with "o" ("obesity ...") became a list item ("-besity ..."): only "o " is a bullet;
  2. `<.*?>` removed text between any "<" and ">" ("p<0.05 ... >2 cm"): only tag-like spans go;
  3. `\\* ` became "- " anywhere in a line ("2 * 3" -> "2 - 3"): only at the start of a line;
  4. markdown links `[text](url)` lost their text (the keep-the-text rule ran after the drop rule);
  5. headers at the very start of the text were not normalised (the regex needed a preceding newline).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from meditron.errors import ConfigError

URL_RE = re.compile(r"(https|http)?:\/\/(\w|\.|\/|\?|\=|\&|\%|\-)*\b", re.MULTILINE)
BULLET_PUA = "\uf0b7"


def remove_urls(text: str) -> str:
    return URL_RE.sub("", text)


def remove_references(text: str, legacy: bool = False) -> str:
    """Drop HTML tags, markdown links, bracketed citations ([12], [Smith 2001], [...])."""
    if legacy:
        text = re.sub(r"<.*?>", "", text)
        text = re.sub(r"\[.*?\]\(.*?\)", "", text)
    else:
        text = re.sub(r"</?[A-Za-z][A-Za-z0-9-]*(\s[^<>]*)?/?>", "", text)
        text = re.sub(r"\[([^\[\]\n]*?)\]\([^()\n]*?\)", r"\1", text)   # keep a link's text
    text = re.sub(r"\[.*?\]", "", text)
    text = re.sub(r"\[\d+\]", "", text)
    return text


def normalize_lists(text: str, legacy: bool = False) -> str:
    """`* `, `•`, U+F0B7 and `+ ` bullets become `- `."""
    text = re.sub(r"\n\* ", "\n- ", text)
    text = re.sub(r"\n•", "\n-", text)
    text = re.sub(r"\no" if legacy else r"\no ", "\n-" if legacy else "\n- ", text)
    text = re.sub("\n" + BULLET_PUA, "\n-", text)
    text = re.sub(r"\n\+ ", "\n- ", text)
    text = text.replace("• ", "- ")
    if legacy:
        text = re.sub(r"\* ", "- ", text)
    else:
        text = re.sub(r"(?m)^(\s*)\* ", r"\1- ", text)
    return text


def remove_weird_chars(text: str) -> str:
    for ch in ("◆", "•", BULLET_PUA, "▪", "■", "□", "\ufffd"):
        text = text.replace(ch, "")
    text = text.replace("*-", "")
    text = text.replace("\n>", "\n")
    text = text.replace("**", "")
    return text


def normalize_sections(text: str, max_hashes: int = 3, legacy: bool = False) -> str:
    """Shift header levels so the smallest is `#`, and cap them at `max_hashes`."""
    if legacy:
        if "\n#" not in text:
            return text
        min_hashes = min(len(x) - 1 for x in re.findall(r"\n#+", text))
        text = re.sub(r"\n" + "#" * min_hashes, "\n#", text)
        return re.sub(r"\n#{%d,}" % max_hashes, "\n" + "#" * max_hashes, text)
    levels = [len(m) for m in re.findall(r"(?m)^(#+)(?=\s)", text)]
    if not levels:
        return text
    shift = min(levels) - 1

    def fix(m: re.Match) -> str:
        return "#" * min(max_hashes, len(m.group(1)) - shift)
    return re.sub(r"(?m)^(#+)(?=\s)", fix, text)


def normalize_newlines(text: str) -> str:
    """Drop lines with no letters, collapse blank lines, one blank line before each header."""
    kept = [line for line in text.split("\n") if re.sub(r"[^a-zA-Z ]", "", line).strip()]
    text = "\n".join(kept) + ("\n" if kept else "")
    text = re.sub(r"\n\s*\n", "\n", text)
    text = re.sub(r"\n{2,}", "\n", text)
    return re.sub(r"\n#", "\n\n#", text)


def clean_common(text: str, legacy: bool = False) -> str:
    """MEDITRON's `clean()`: the six common steps, in order."""
    text = remove_urls(text)
    text = remove_references(text, legacy)
    text = normalize_lists(text, legacy)
    text = remove_weird_chars(text)
    text = normalize_sections(text, legacy=legacy)
    text = normalize_newlines(text)
    return text.strip()


def clean_abstract(text: str, legacy: bool = False) -> str:
    """MEDITRON's abstract processing: URLs and references removed."""
    return normalize_whitespace(remove_references(remove_urls(text), legacy))


def normalize_whitespace(text: str) -> str:
    """NULs out, CRLF to LF, trailing spaces stripped, at most one blank line in a row."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# ---------------------------------------------------------------- per-source truncation rules
@dataclass
class SourceRules:
    """Truncation and line filters for one guideline source (rules as data)."""
    starters: list[str] = field(default_factory=list)
    removers: list[str] = field(default_factory=list)
    stoppers: list[str] = field(default_factory=list)
    min_line_words: int = 0        # drop lines with fewer words (MEDITRON: 3 for some sources)
    min_long_lines: int = 0        # drop the article if fewer lines have > long_line_words words
    long_line_words: int = 10
    min_lines: int = 0             # drop the article if the cleaned text has fewer lines


def truncate(text: str, starters=None, removers=None, stoppers=None) -> str:
    """Keep from the first starter line to the first stopper line, without remover lines.

    A line matches a prefix in any of four forms: raw, lower-cased, without '#', letters only.
    """
    starters = [s.lower() for s in starters or []]
    removers = [s.lower() for s in removers or []]
    stoppers = [s.lower() for s in stoppers or []]
    out: list[str] = []
    started = False
    for line in text.split("\n"):
        low = line.lower()
        forms = (line, low.strip(), re.sub(r"#", "", low).strip(), re.sub(r"[^a-zA-Z ]", "", low).strip())
        if starters and not started and any(f.startswith(s) for f in forms for s in starters):
            out = [line]
            started = True
        elif removers and any(f.startswith(s) for f in forms for s in removers):
            continue
        elif stoppers and any(f.startswith(s) for f in forms for s in stoppers):
            break
        elif forms[3] == "":
            continue
        else:
            out.append(line)
    return "\n".join(out).strip()


def load_rules(path: str = "") -> dict[str, SourceRules]:
    """Rules by lower-cased source name (the record's `source` field, e.g. 'cdc', 'nice').

    Called per document, so parses are cached, keyed on the file's modification time and size as well
    as its path: a file edited between two builds in one process is read again."""
    if not path:
        return _parse_rules("", 0, 0)
    try:
        st = Path(path).stat()   # one system call per document: this is the corpus's per-document path
    except OSError:
        raise ConfigError(f"rules_file {path} does not exist") from None
    return _parse_rules(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse_rules(path: str, mtime_ns: int, size: int) -> dict[str, SourceRules]:
    where = f"rules_file {path}" if path else "the packaged rules"
    text = Path(path).read_text() if path else \
        resources.files("meditron.corpus").joinpath("rules/guidelines.yaml").read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map source names to their rules, not a {type(raw).__name__}")
    out = {}
    fields = SourceRules.__dataclass_fields__
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"rules for {name!r} in {where} must be a mapping of rule keys, not {spec!r}")
        bad = set(spec) - set(fields)
        if bad:
            raise ConfigError(f"rules for {name!r}: unknown key {sorted(bad)[0]!r}; known: {', '.join(sorted(fields))}")
        for key, value in spec.items():
            lines = key in ("starters", "removers", "stoppers")
            ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)) if lines else \
                (isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise ConfigError(f"rules for {name!r}: {key} must be "
                                  f"{'a list of strings' if lines else 'an integer'}, got {value!r}")
        out[str(name).lower()] = SourceRules(**spec)
    return out


def clean_guideline(text: str, rules: SourceRules | None, legacy: bool = False) -> tuple[str | None, str]:
    """(cleaned text or None, reason) for one guideline under its source's rules."""
    if rules and (rules.starters or rules.removers or rules.stoppers):
        text = truncate(text, rules.starters, rules.removers, rules.stoppers)
    if rules and rules.min_line_words:
        text = "\n".join(l for l in text.split("\n")
                         if l.lstrip().startswith("#") or len(l.split()) >= rules.min_line_words)
    text = clean_common(text, legacy)
    if rules and rules.min_long_lines:
        long_lines = sum(1 for l in text.split("\n") if len(l.split()) > rules.long_line_words)
        if long_lines < rules.min_long_lines:
            return None, "too_few_long_lines"
    if rules and rules.min_lines and len(text.split("\n")) < rules.min_lines:
        return None, "too_few_lines"
    return text, ""


def clean_text(text: str, profile: str, source_key: str = "", rules_file: str = "",
               legacy: bool = False) -> tuple[str | None, str]:
    """Clean one document's text by profile; returns (text or None, drop reason)."""
    if profile == "guidelines":
        rules = load_rules(rules_file).get(source_key.lower()) if source_key else None
        return clean_guideline(text, rules, legacy)
    if profile == "abstracts":
        return clean_abstract(text, legacy), ""
    if profile in ("papers", "plain"):
        return normalize_whitespace(text), ""
    return text, ""


def rule_table(rules: dict[str, SourceRules]) -> dict[str, Any]:
    return {k: vars(v) for k, v in sorted(rules.items())}
