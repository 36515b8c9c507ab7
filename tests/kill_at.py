"""Run a real `codegemma` command and SIGKILL it at an exact point, from outside the product.

    python -m tests.kill_at MODULE:NAME N [SIGNAL] -- ARGS...   (also under torchrun: `-m tests.kill_at ...`)

runs `codegemma ARGS...` in this process after wrapping the function MODULE.NAME: when its N-th
call has returned, the process sends itself SIGKILL (no cleanup, no atexit, no flush: a power cut
as far as the program can tell), or SIGNAL (e.g. INT: a Ctrl-C). Production code keeps no hook for this; the wrapper replaces a
module attribute the product looks up at call time (e.g. `codegemma.data.tasks:mark_done`, called
after each task's outputs are written, or `codegemma.train.loop:optimizer_step`).

Why a wrapper rather than a test that watches files and sends the signal: a watcher reacts some
time after the file appears, while the process runs on, so where it dies would depend on the
machine's load; the wrapper kills at the same call every time, without sleeps or timing.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def kill_after(target: str, n: int, sig: signal.Signals = signal.SIGKILL) -> None:
    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == n:
            os.kill(os.getpid(), sig)
        return result

    setattr(module, name, wrapper)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") not in (2, 3):
        print("usage: python -m tests.kill_at MODULE:NAME N [SIGNAL] -- CODEGEMMA-ARGS...", file=sys.stderr)
        return 2
    split = argv.index("--")
    sig = signal.Signals[f"SIG{argv[2]}"] if split == 3 else signal.SIGKILL
    kill_after(argv[0], int(argv[1]), sig)
    from codegemma.cli import main as codegemma_main

    sys.argv = ["codegemma", *argv[split + 1:]]
    return codegemma_main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
