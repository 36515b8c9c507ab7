"""Run a list of independent tasks: inline, in local processes, or on a Ray cluster.

Tasks write their own outputs and done markers, so an executor only has to run them and report
completion (for the progress bar). Results never flow back through the executor, which is why
the output cannot depend on completion order. Errors do: the first one is raised in the driver.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from tqdm import tqdm

from codegemma.atomic import DiskFullError


@dataclass
class ExecutorConfig:
    kind: str = "local"              # "local" | "ray"
    workers: int = 1
    ray_address: str | None = None   # join an existing cluster ("auto" or "ray://host:10001")

    def __post_init__(self):
        if self.kind not in ("local", "ray"):
            raise ValueError(f"--executor must be 'local' or 'ray', got {self.kind!r}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")


def _exit_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: leave when the driver dies (SIGKILL leaves no chance to clean up),
    instead of lingering as an orphan."""
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _run_task(fn: Callable[[dict], None], task: dict) -> str | None:
    """fn(task) in a worker; a full disk comes back as its path and is raised again in the driver
    (Ray would hand it back wrapped in a RayTaskError, a process pool as itself: a plain value is
    the same for both)."""
    try:
        fn(task)
    except DiskFullError as exc:
        return exc.path
    return None


def _raise_disk_full(path: str | None) -> None:
    if path is not None:
        raise DiskFullError(path)


class Executor:
    """Runs stages of tasks; the process pool or Ray session lives across stages (one start-up).

    Use as a context manager: `with Executor(cfg) as ex: ex.run(fn, tasks, desc)`.
    """

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self._pool: ProcessPoolExecutor | None = None
        self._ray = None
        self._ray_started = False

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._ray_started:
            self._ray.shutdown()
            self._ray_started = False

    def run(self, fn: Callable[[dict], None], tasks: list[dict], desc: str) -> None:
        """Run fn(task) for every task; raises the first task error."""
        if not tasks:
            return
        # progress on a terminal only: in a log or a pipe, bars would bury the one line that matters
        bar = tqdm(total=len(tasks), desc=desc, unit="task", leave=False, disable=None)
        try:
            if self.cfg.kind == "ray":
                self._run_ray(fn, tasks, bar)
            elif self.cfg.workers == 1:
                for t in tasks:
                    fn(t)
                    bar.update(1)
            else:
                self._run_processes(fn, tasks, bar)
        finally:
            bar.close()

    def _run_processes(self, fn, tasks, bar) -> None:
        if self._pool is None:
            # spawn, not fork: the driver may hold tokenizers/numpy thread pools that do not survive fork
            self._pool = ProcessPoolExecutor(max_workers=self.cfg.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
        pending = {self._pool.submit(_run_task, fn, t) for t in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                _raise_disk_full(fut.result())
                bar.update(1)

    def _run_ray(self, fn, tasks, bar) -> None:
        if self._ray is None:
            try:
                import ray
            except ImportError:
                raise ValueError("--executor ray needs the ray package: pip install 'ray>=2.9'") from None
            self._ray = ray
            if not ray.is_initialized():
                if self.cfg.ray_address:
                    try:
                        ray.init(address=self.cfg.ray_address, log_to_driver=False)
                    except (ConnectionError, RuntimeError, ValueError) as exc:
                        raise ValueError(f"--ray-address {self.cfg.ray_address}: cannot join the Ray cluster "
                                         f"({exc}); start one with `ray start --head` or omit --ray-address") from None
                else:
                    ray.init(num_cpus=self.cfg.workers, include_dashboard=False, log_to_driver=False)
                self._ray_started = True
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=2)(_run_task)
        pending = [remote.remote(fn, t) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for path in ray.get(done):
                _raise_disk_full(path)
            bar.update(len(done))
