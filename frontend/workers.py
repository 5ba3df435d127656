"""The one worker pool of the project: mixture writing, metric workers and the TTS corpus use it.

:class:`WorkerPool` runs a function over items in worker processes, each set up once by an
initializer (and closed by a finalizer when it exits), or in this process when ``processes`` is 0.
Results come back in order (:meth:`WorkerPool.map`), as they finish (:meth:`WorkerPool.map_unordered`)
or one at a time (:meth:`WorkerPool.submit`). Every worker runs one torch thread (the workers
already use the cores) and ignores Ctrl-C: the interrupt reaches the whole process group, and the
parent alone handles it by stopping the pool.

When a worker dies (out of memory, killed), the pool raises :class:`WorkerDied` instead of waiting
forever for its results: it is built on :class:`concurrent.futures.ProcessPoolExecutor`, which
notices a dead worker, where :class:`multiprocessing.Pool` starts a new one and loses the task.
Leaving the pool normally waits for the workers to exit (their finalizers run); leaving it by an
exception cancels the queued tasks and stops the workers at once.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.util
import signal
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

import torch

from frontend.errors import VoxsepError

# spawn, for every pool. A forked child copies the parent's memory but only the thread that called
# fork: a lock another thread held at that instant (torch's intra-op/OpenMP thread pools, tqdm's
# monitor thread, a logging handler) stays locked in the child forever, so a fork after torch has
# run can hang a worker. spawn starts each worker as a fresh interpreter that imports what it needs,
# whatever the parent did before, on every OS; it costs an import of torch per worker, once per pool.
START_METHOD = "spawn"


class WorkerDied(VoxsepError, RuntimeError):
    """A worker process ended without finishing its task (killed, out of memory)."""


def _start_worker(initializer: Callable | None, initargs: tuple, finalizer: Callable | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)
    if finalizer is not None:  # runs when the worker exits normally (the pool is left without error)
        multiprocessing.util.Finalize(None, finalizer, exitpriority=10)


class WorkerPool:
    """Worker processes started with :data:`START_METHOD`, or this process (see the module docstring).

    Args:
        processes: worker processes; 0 runs every task in this process, after ``initializer``,
            with one torch thread (the thread count is restored and ``finalizer`` runs on leaving).
        initializer: called as ``initializer(*initargs)`` once in each worker (picklable: a
            module-level function, arguments that pickle).
        finalizer: called once in each worker when it exits after a normal end of the pool.
        name: what the workers do, for the error message (``a NAME worker process died``).
        hint: what to do about a dead worker, appended to that message.

    Use it as a context manager; tasks are module-level functions of one picklable item.
    """

    def __init__(self, processes: int, initializer: Callable | None = None, initargs: tuple = (),
                 finalizer: Callable | None = None, *, name: str = "", hint: str = ""):
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self.initializer, self.initargs, self.finalizer = initializer, tuple(initargs), finalizer
        self.name, self.hint = name, hint
        self._executor: ProcessPoolExecutor | None = None
        self._stack: contextlib.ExitStack | None = None

    # -- entering and leaving ------------------------------------------------------------------
    def __enter__(self) -> WorkerPool:
        stack = contextlib.ExitStack()
        if self.processes == 0:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(1)
            if self.initializer is not None:
                try:
                    self.initializer(*self.initargs)
                except BaseException:
                    stack.close()  # restores the thread count
                    raise
            if self.finalizer is not None:
                stack.callback(self.finalizer)
        else:
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context(START_METHOD),
                initializer=_start_worker, initargs=(self.initializer, self.initargs, self.finalizer))
        self._stack = stack
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._executor is not None:
                if exc_type is None:
                    self._executor.shutdown(wait=True)
                else:
                    self._stop()
        finally:
            self._executor = None
            self._stack.close()
        if isinstance(exc, BrokenProcessPool):
            message = f"a {self.name + ' ' if self.name else ''}worker process died (out of memory?)"
            raise WorkerDied(f"{message}; {self.hint}" if self.hint else message) from None

    def _stop(self) -> None:
        """Cancel the queued tasks and end the workers now (their results would not be read)."""
        executor = self._executor
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()

    # -- running tasks -------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], items: Iterable, chunksize: int = 1) -> Iterator:
        """``fn(item)`` for every item, in the order of ``items`` (``chunksize`` items per message)."""
        if self._executor is None:
            return (fn(item) for item in items)
        return self._executor.map(fn, items, chunksize=chunksize)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable) -> Iterator:
        """``fn(item)`` for every item, as the workers finish them (in order in this process)."""
        if self._executor is None:
            return (fn(item) for item in items)
        futures = [self._executor.submit(fn, item) for item in items]
        return (future.result() for future in as_completed(futures))

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        """Start ``fn(*args)``; in this process it runs now and the future is already done."""
        if self._executor is not None:
            return self._executor.submit(fn, *args)
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # noqa: BLE001 - handed to the caller through the future, as a worker's
            future.set_exception(err)
        return future
