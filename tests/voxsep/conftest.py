"""Fixtures for the `voxsep serve` tests (tests/voxsep/test_web*.py): test recordings made from the
bundled examples, the bundled model, and a live server on a free loopback port in a thread."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

EXAMPLES = Path(__file__).resolve().parents[2] / "voxsep" / "examples"
SR = 8000


def _example(name: str) -> np.ndarray:
    wav, sr = sf.read(EXAMPLES / f"{name}.flac", dtype="float32")
    assert sr == SR
    return wav


def _mix(*signals: np.ndarray, offsets: tuple[int, ...] | None = None) -> np.ndarray:
    offsets = offsets or (0,) * len(signals)
    n = max(o + len(s) for o, s in zip(offsets, signals))
    mix = np.zeros(n, dtype=np.float32)
    for o, s in zip(offsets, signals):
        mix[o:o + len(s)] += s / (np.sqrt(np.mean(s**2)) + 1e-8) * 0.05
    return mix * (0.9 / np.abs(mix).max())


@pytest.fixture(scope="session")
def web_recordings(tmp_path_factory) -> dict[str, Path]:
    """Test uploads: 2-talker mixtures of unseen bundled voices, a 24 s one (three windows), a
    corrupt file, a truncated FLAC (its header reads, its data does not), a text file, an empty one."""
    folder = tmp_path_factory.mktemp("web_recordings")
    # pairs the bundled model counts as two (p >= 0.8); the tests do not rely on it
    a = _example("festival-ked_diphone-f118-d1.10-w1.10_000")
    b = _example("espeak-en-gb+m5-p80-s130_000")
    c = _example("flite-awb-f104-d1.20-w1.10_000")
    d = _example("flite-kal16-f106-d1.00-w0.95_000")
    files = {
        "two": folder / "two talkers.wav",
        "two_b": folder / "another pair.flac",
        "long": folder / "long meeting.wav",
        "corrupt": folder / "corrupt.wav",
        "truncated": folder / "truncated.flac",
        "text": folder / "notes.txt",
        "empty": folder / "empty.wav",
    }
    sf.write(files["two"], _mix(a, b), SR)
    sf.write(files["two_b"], _mix(c, d), SR)
    pairs = [_mix(a, b), _mix(c, d), _mix(b, c), _mix(d, a), _mix(a, c), _mix(b, d)]
    sf.write(files["long"], np.concatenate(pairs)[:24 * SR], SR)
    rng = np.random.default_rng(0)
    files["corrupt"].write_bytes(b"RIFF" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    flac = (EXAMPLES / "flite-rms-d1.00-w1.00_000.flac").read_bytes()
    files["truncated"].write_bytes(flac[:len(flac) // 3])
    files["text"].write_text("minutes of the meeting\n")
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture(scope="module")
def bundled_separator():
    """The bundled 'default' model in the CLI's Separator, on one torch thread for the module.

    One thread: the browser and the server share the cores with the test run (and, on a busy
    machine, with other jobs); two torch threads on two shared cores ran 10x slower here.
    """
    import torch

    from separation.inference import Separator
    from voxsep.registry import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, ckpt = load_model("default", task="separation")
    yield Separator(model, int(ckpt["sample_rate"]), model_name="default")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def running_server(service, allowed_hosts=("127.0.0.1", "localhost", "::1")):
    """Serve ``service`` on a free 127.0.0.1 port in a thread; yields the base URL (no trailing /)."""
    from voxsep.web.app import bind, create_app, make_server, url_of

    sock = bind("127.0.0.1", 0)
    server = make_server(create_app(service, allowed_hosts=allowed_hosts))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def web_service(tmp_path_factory, bundled_separator):
    """A service on the bundled model with a fresh work folder, closed after the module."""
    from voxsep.web.jobs import Limits, SeparationService

    work = tmp_path_factory.mktemp("web") / "work"
    service = SeparationService(bundled_separator, work, Limits())  # the defaults of voxsep serve
    yield service
    service.close()


@pytest.fixture(scope="module")
def web_url(web_service):
    """The base URL of a live server for ``web_service``."""
    with running_server(web_service) as url:
        yield url
