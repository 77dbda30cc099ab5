"""Stopping on a signal with a checkpoint: a cluster's time-limit warning, a preemption, or Ctrl-C.

SLURM sends SIGTERM (or the signal of `--signal`) before it kills a job; a user presses Ctrl-C.
Dying there loses every step since the last checkpoint. Instead, the signals named in
`checkpoint.on_signal` only record a request; the loop finishes the step it is in, all ranks agree
(a signal may reach only some of them), a checkpoint is written, and the command exits with
128 + the signal's number, the code a shell reports for a death by that signal, so scripts that
chain `meditron train … && meditron export …` stop too. A second signal, a second or more after the
first, aborts at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from meditron.errors import ConfigError

# Signals that mean "stop" (a catch-all would let SIGCHLD or SIGWINCH, a terminal resize, end a run).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT")
ABORT_AFTER_S = 1.0     # a second signal at least this long after the first aborts without a checkpoint


def parse_signals(names: list[str]) -> list[signal.Signals]:
    """`checkpoint.on_signal` as signals; other names are a ConfigError."""
    out = []
    for name in names:
        key = str(name).upper()
        key = key if key.startswith("SIG") else "SIG" + key
        if key not in STOP_SIGNALS or not hasattr(signal.Signals, key):
            raise ConfigError(f"checkpoint.on_signal: {name!r} is not one of {', '.join(STOP_SIGNALS)}")
        out.append(signal.Signals[key])
    return out


class TrainingStopped(Exception):
    """The run stopped on a signal after saving a checkpoint (not an error: `meditron train` reports it
    and exits with `exit_code`, 128 + the signal)."""

    def __init__(self, signum: int, step: int, checkpoint):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step}; checkpoint {checkpoint}; "
                         "run the same command again to resume from it")
        self.exit_code = 128 + signum


class StopRequest:
    """Context manager: while active, the given signals set `self.signum` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere (e.g. training called from a worker
    thread) the signals keep their usual effect.
    """

    def __init__(self, signals: list[signal.Signals], announce: bool = True):
        self.signals, self.announce = signals, announce
        self.signum: int | None = None
        self._since = 0.0
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signum is not None:
            # A repeat within a second is the same request passed on (torchrun forwards what it gets, SLURM
            # may signal every process); a later one is the user insisting (under torchrun, a second
            # Ctrl-C reaches the workers as SIGTERM).
            if now - self._since >= ABORT_AFTER_S:
                raise KeyboardInterrupt
            return
        self.signum, self._since = signum, now
        if self.announce:   # os.write: a signal may interrupt a write to sys.stderr, which cannot be re-entered
            os.write(2, f"\nmeditron: {signal.Signals(signum).name} received; stopping after this step with a "
                        "checkpoint (signal again, a second later, to abort without one)\n".encode())

    def agreed(self, distributed: bool, device) -> int | None:
        """The signal any rank received (the largest number if several), the same on every rank.

        Called once per step on every rank; distributed, that is one scalar all-reduce.
        """
        if not distributed:
            return self.signum
        import torch    # here, not at the top: train/config.py imports this module and stays torch-free
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None
