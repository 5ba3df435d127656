"""frontend.workers: the one worker pool (ordered and unordered results, initializer and finalizer
in every worker or in this process, errors that cross processes, a dead worker is an error, not a hang)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from frontend import AudioError, VoxsepError
from frontend.workers import START_METHOD, WorkerDied, WorkerPool

_STATE: dict = {}


def _init(tag: str, folder: str) -> None:
    _STATE.update(tag=tag, folder=folder)


def _finish() -> None:
    Path(_STATE["folder"], f"finalized-{os.getpid()}").write_text(_STATE["tag"])
    _STATE.clear()


def _describe(x: int) -> tuple:
    return (x * x, _STATE["tag"], torch.get_num_threads(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def _fail(x: int) -> int:
    if x == 3:
        raise AudioError(f"/data/{x}.wav", "not audio")
    return x


def _die(x: int) -> int:
    if x == 2:
        os._exit(1)  # as the out-of-memory killer would end it
    return x


def test_spawn_is_the_start_method():
    assert START_METHOD == "spawn"


def test_in_process_runs_initializer_then_finalizer_and_restores_threads(tmp_path):
    threads = torch.get_num_threads()
    with WorkerPool(0, _init, ("here", str(tmp_path)), _finish) as pool:
        assert [r[:3] for r in pool.map(_describe, range(4))] == [(x * x, "here", 1) for x in range(4)]
        assert [r[0] for r in pool.map_unordered(_describe, [3, 1])] == [9, 1]
        assert pool.submit(_describe, 5).result()[0] == 25
        failed = pool.submit(_fail, 3)
        with pytest.raises(AudioError, match="/data/3.wav: not audio"):
            failed.result()
    assert torch.get_num_threads() == threads
    assert [p.read_text() for p in tmp_path.iterdir()] == ["here"] and _STATE == {}
    with pytest.raises(AudioError):
        with WorkerPool(0, _init, ("again", str(tmp_path)), _finish) as pool:
            list(pool.map(_fail, range(5)))
    assert torch.get_num_threads() == threads and _STATE == {}  # the finalizer ran on the error too


@pytest.mark.slow
def test_workers_give_ordered_results_and_run_their_finalizers(tmp_path):
    with WorkerPool(2, _init, ("worker", str(tmp_path)), _finish) as pool:
        ordered = list(pool.map(_describe, range(9), chunksize=2))
        unordered = sorted(pool.map_unordered(_describe, range(5)))
        submitted = pool.submit(_describe, 7).result()
    # each worker: its initializer ran, one torch thread, Ctrl-C left to the parent
    assert ordered == [(x * x, "worker", 1, True) for x in range(9)]
    assert unordered == [(x * x, "worker", 1, True) for x in range(5)] and submitted == (49, "worker", 1, True)
    done = sorted(tmp_path.iterdir())
    assert 1 <= len(done) <= 2 and {p.read_text() for p in done} == {"worker"}


@pytest.mark.slow
def test_errors_cross_processes_and_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(AudioError, match="/data/3.wav: not audio") as caught:
        with WorkerPool(2) as pool:
            list(pool.map(_fail, range(6)))
    assert caught.value.path == "/data/3.wav" and caught.value.reason == "not audio"
    with pytest.raises(WorkerDied, match=r"^a mixing worker process died \(out of memory\?\); use one worker$"):
        with WorkerPool(2, name="mixing", hint="use one worker") as pool:
            list(pool.map(_die, range(6)))
    assert issubclass(WorkerDied, VoxsepError) and issubclass(WorkerDied, RuntimeError)
