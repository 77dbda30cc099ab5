"""Bad input: a one-line error naming the problem and the fix, exit code 2; --debug shows the traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import tiny_model
from meditron.cli import main
from meditron.errors import MeditronError
from meditron.model.weights import save_hf


@pytest.fixture()
def tiny_folder(tmp_path):
    from meditron.model.tokenizer import load_tokenizer

    model = tiny_model("tiny-gqa", vocab_size=32000)
    return save_hf(model, tmp_path / "tiny", tokenizer=load_tokenizer("llama-2"))


def run_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meditron: error: ") and "\n" not in err
    return err


def test_unknown_model_reference(capsys):
    assert "unknown model 'no-such-model'" in run_error(capsys, ["generate", "--model", "no-such-model", "hi"])


def test_folder_without_weights(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_model().config.to_hf()))
    assert "no model.safetensors" in run_error(capsys, ["generate", "--model", str(tmp_path), "hi"])


def test_partial_sharded_download(capsys, tmp_path, tiny_folder):
    sharded = tmp_path / "sharded"
    save_hf(tiny_model("tiny-gqa", vocab_size=32000), sharded, max_shard_bytes=50_000)
    next(iter(sorted(sharded.glob("model-*.safetensors")))).unlink()
    assert "missing" in run_error(capsys, ["convert", str(sharded), str(tmp_path / "x")])


@pytest.mark.parametrize("argv", [
    ["corpus", "build", "configs/corpus-sample.yaml", "--out", "{blocked}"],
    ["convert", "{tiny}", "{blocked}"],
    ["sft-data", "medmcqa", "--data-dir", "{benchmarks}", "--out", "{blocked}/x.jsonl"],
], ids=["corpus", "convert", "sft-data"])
def test_an_output_path_the_file_system_refuses_is_one_line(capsys, tmp_path, tiny_folder, shared_data, argv):
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "out"        # below a regular file: no folder can be made there
    argv = [a.format(blocked=blocked, tiny=tiny_folder, benchmarks=shared_data / "benchmarks") for a in argv]
    err = run_error(capsys, argv)
    assert "a-file" in err and ("Not a directory" in err or "File exists" in err), err


def test_pickled_weights_are_refused(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_model().config.to_hf()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    assert "never loads" in run_error(capsys, ["generate", "--model", str(tmp_path), "hi"])


def test_config_does_not_match_weights(capsys, tiny_folder):
    cfg = json.loads((tiny_folder / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (tiny_folder / "config.json").write_text(json.dumps(cfg))
    assert "does not match the weights" in run_error(capsys, ["generate", "--model", str(tiny_folder), "hi"])


def test_tokenizer_larger_than_embedding(capsys, tmp_path):
    from meditron.model.tokenizer import load_tokenizer

    folder = save_hf(tiny_model("tiny-gqa"), tmp_path / "m", tokenizer=load_tokenizer("llama-2"))  # 512 rows
    assert "32000 tokens but the model's embedding has 512 rows" in run_error(
        capsys, ["generate", "--model", str(folder), "hi"])


def test_prompt_longer_than_context(capsys, tiny_folder):
    err = run_error(capsys, ["generate", "--model", str(tiny_folder), "--max-new-tokens", "4", "word " * 400])
    assert "exceeds the model's context of 256" in err


def test_debug_shows_the_traceback(tiny_folder):
    with pytest.raises(MeditronError):
        main(["--debug", "generate", "--model", "no-such-model", "hi"])


def test_convert_embedded_model_loads_in_transformers(tmp_path, smollm2):
    import torch
    import transformers

    assert main(["convert", "smollm2-135m", str(tmp_path / "out"), "--dtype", "fp32"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    model, ours = smollm2
    text = "The patient was given 250 mg of amoxicillin."
    assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
    ids = torch.tensor([ours.encode(text)])
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() <= 1e-4
    assert main(["convert", "smollm2-135m", str(tmp_path / "out")]) == 2  # refuses to overwrite


def test_convert_to_bf16_halves_the_files(tmp_path, tiny_folder):
    assert main(["convert", str(tiny_folder), str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "bf16") < 0.6 * size(tiny_folder)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    shutil.rmtree(tmp_path / "bf16")


def _fail_with(exc):
    def command(args):
        raise exc
    return command


def test_os_errors_without_a_path_keep_their_traceback(monkeypatch):
    """A dropped connection or a full disk is not a path to fix: it is raised, traceback and all."""
    import meditron.cli.train as train_cli

    monkeypatch.setattr(train_cli, "_plot", _fail_with(ConnectionResetError()))
    with pytest.raises(ConnectionResetError):
        main(["plot", "somewhere"])


def test_a_closed_stdout_ends_quietly():
    """`meditron … | head`: the reader left; no error message, no traceback."""
    import subprocess
    import sys

    code = ("import sys, meditron.cli.train as t\n"
            "def plot(args): raise BrokenPipeError(32, 'Broken pipe')\n"
            "t._plot = plot\n"
            "from meditron.cli import main\n"
            "sys.exit(main(['plot', 'x']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
