"""Stopping on a signal with a checkpoint: a cluster's time-limit warning, a preemption, or Ctrl-C.

SLURM sends SIGTERM (or the signal of `--signal`) before it kills a job; a user presses Ctrl-C.
Dying there loses every step since the last checkpoint. Instead, the signals named in
`checkpoint.on_signal` only record a request; the loop finishes the step it is in, all ranks agree
(a signal may reach only some of them), a checkpoint is written, and the command exits with
128 + the signal's number, the code a shell reports for a death by that signal, so scripts that
chain `meditron train … && meditron export …` stop too. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from meditron.errors import ConfigError

UNCATCHABLE = {"SIGKILL", "SIGSTOP"}
ABORT_AFTER_S = 1.0     # a second Ctrl-C at least this long after the first aborts without a checkpoint


def parse_signals(names: list[str]) -> list[signal.Signals]:
    """`checkpoint.on_signal` as signals; unknown or uncatchable names are a ConfigError."""
    out = []
    for name in names:
        key = str(name).upper()
        key = key if key.startswith("SIG") else "SIG" + key
        if key in UNCATCHABLE or not hasattr(signal.Signals, key):
            raise ConfigError(f"checkpoint.on_signal: {name!r} is not a signal a process can catch "
                              f"(use e.g. SIGTERM, SIGINT, SIGUSR1)")
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
            # A second Ctrl-C aborts; not one within a second of the first, which is torchrun passing on
            # the Ctrl-C its workers already got from the terminal.
            if signum == signal.SIGINT and now - self._since >= ABORT_AFTER_S:
                raise KeyboardInterrupt
            return
        self.signum, self._since = signum, now
        if self.announce:
            sys.stderr.write(f"\nmeditron: {signal.Signals(signum).name} received; stopping after this step "
                             "with a checkpoint (Ctrl-C again to abort without one)\n")

    def agreed(self, distributed: bool, device) -> int | None:
        """The signal any rank received (the largest number if several), the same on every rank.

        Called once per step on every rank; distributed, that is one scalar all-reduce.
        """
        if not distributed:
            return self.signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None
