"""A stop signal (SLURM's time-limit warning, a preemption, Ctrl-C) ends the run after the current step
with a checkpoint, on every rank at the same step, and the resumed run repeats the uninterrupted losses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from train_helpers import REPO, TINY, losses, run_train, train_command, train_env
from meditron.errors import ConfigError
from meditron.train.config import load_train_config
from meditron.train.stop import ABORT_AFTER_S, StopRequest

pytestmark = pytest.mark.timeout(300)

LONG = ["train.steps=60", "eval.interval=0", "checkpoint.interval=0"]   # only a stop writes a checkpoint


def start_train(out: Path, overrides: list[str], nproc: int = 1) -> subprocess.Popen:
    return subprocess.Popen(train_command(out, overrides, nproc), env=train_env(), cwd=REPO,
                            stderr=subprocess.PIPE, text=True)


def wait_for_steps(proc: subprocess.Popen, out: Path, n: int) -> None:
    """Until metrics.jsonl holds n rows (the model is built and stepping)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        path = out / "metrics.jsonl"
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {n} (exit {proc.poll()}):\n{proc.stderr.read()[-3000:]}")


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").iterdir())


def test_sigterm_saves_the_current_step_and_the_resumed_run_repeats_the_losses(tmp_path):
    ref = tmp_path / "ref"
    run_train(ref, LONG)
    out = tmp_path / "stopped"
    proc = start_train(out, LONG)
    wait_for_steps(proc, out, 2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped_at = max(losses(out))
    assert 2 <= stopped_at < 60
    assert f"stopped by SIGTERM after step {stopped_at}; checkpoint" in err
    assert checkpoint_steps(out) == [stopped_at]                  # the signal's checkpoint, nothing else
    assert not list((out / "checkpoints").glob("*.tmp"))
    run_train(out, LONG)
    got, want = losses(out), losses(ref)
    assert sorted(got) == list(range(1, 61))
    for step in range(stopped_at + 1, 61):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step


def _child_with_rank(parent: int, rank: int) -> int:
    """The pid of the torchrun worker (a child of `parent`) whose RANK is `rank` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc (Linux)")
@pytest.mark.parametrize("layout", ["parallel.dp=2", "parallel.pp=2"])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, layout):
    """SLURM may signal some processes only: the ranks agree on the step (an all-reduce per step), so the
    collective checkpoint is complete and no rank is left waiting in a collective (with pipeline stages too,
    where rank 1 holds the last layers and the loss)."""
    out = tmp_path / "run"
    proc = start_train(out, [*LONG, "train.steps=400", layout], nproc=2)
    wait_for_steps(proc, out, 2)
    os.kill(_child_with_rank(proc.pid, 1), signal.SIGUSR1)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode != 0, err[-3000:]                     # torchrun reports the workers' exit 138
    stopped_at = max(losses(out))
    assert f"stopped by SIGUSR1 after step {stopped_at}; checkpoint" in err, err[-3000:]
    assert err.count("stopped by SIGUSR1") == 1                  # said once, by rank 0
    assert checkpoint_steps(out) == [stopped_at] and stopped_at < 400
    assert (out / "checkpoints" / f"step_{stopped_at:08d}" / "train_state.json").is_file()


def test_a_repeat_within_a_second_is_ignored_a_later_one_aborts_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest([signal.SIGINT, signal.SIGTERM, signal.SIGUSR1], announce=False) as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)                                          # the handler runs between bytecodes
        assert stop.signum == signal.SIGUSR1 and stop.agreed(False, None) == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)                      # the same request passed on by torchrun
        time.sleep(0.01)
        assert stop.signum == signal.SIGUSR1
        time.sleep(ABORT_AFTER_S)
        with pytest.raises(KeyboardInterrupt):                    # the user insisting
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("name", ["SIGKILL", "SIGCHLD", "SIGNOPE"])
def test_signals_that_cannot_mean_stop_name_the_key(name):
    with pytest.raises(ConfigError, match="checkpoint.on_signal"):
        load_train_config(TINY, [f"checkpoint.on_signal=[{name}]"])
