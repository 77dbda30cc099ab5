"""Typed YAML configs with dotted overrides; bad keys and values are one-line errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meditron.config import load_config
from meditron.errors import ConfigError


@dataclass
class Optim:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class Parallel:
    dp: int = 1
    tp: int = 1
    schedule: str = "1f1b"


@dataclass
class Run:
    name: str = "run"
    seed: int = 0
    resume: bool = False
    init: str | None = None
    optim: Optim = field(default_factory=Optim)
    parallel: Parallel = field(default_factory=Parallel)


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: meditron\noptim:\n  lr: 1.5e-4\nparallel:\n  dp: 2\n")
    cfg = load_config(Run, path, ["parallel.tp=4", "optim.betas=[0.9, 0.99]", "resume=true", "init=null"])
    assert cfg.name == "meditron" and cfg.optim.lr == 1.5e-4 and cfg.parallel == Parallel(dp=2, tp=4)
    assert cfg.optim.betas == [0.9, 0.99] and cfg.resume is True and cfg.init is None


@pytest.mark.parametrize("override,message", [
    (["parallel.pd=2"], "unknown config key 'parallel.pd'"),
    (["parallel.dp=two"], "config key 'parallel.dp' must be int"),
    (["seed=true"], "config key 'seed' must be int"),
    (["optim=3"], "config section 'optim' must be a mapping"),
    (["nokey"], "not of the form key.sub=value"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, override)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)


def test_set_takes_several_overrides_the_same_way_in_every_command():
    """One `--set` may carry several key=value pairs, and may repeat; docs and config comments rely on it."""
    from meditron.cli import build_parser
    from meditron.corpus.config import load_corpus_config
    from meditron.train.config import load_train_config

    parse = build_parser().parse_args
    args = parse(["train", "configs/tiny.yaml", "--set", "train.steps=2", "parallel.dp=2", "--set", "eval.interval=0"])
    cfg = load_train_config(args.config, args.overrides)
    assert (cfg.train.steps, cfg.parallel.dp, cfg.eval.interval) == (2, 2, 0)
    args = parse(["corpus", "build", "configs/corpus-sample.yaml", "--set", "limit_per_source=5", "tasks=2",
                  "--set", "mix.seed=3"])
    cfg = load_corpus_config(args.config, args.overrides)
    assert (cfg.limit_per_source, cfg.tasks, cfg.mix.seed) == (5, 2, 3)
