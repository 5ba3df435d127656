import os

# mir_eval's dense solves oversubscribe a shared CPU with BLAS threads; one thread is faster here
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from tests.evaluation.speech import make_items


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def espeak_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("espeak")


@pytest.fixture(scope="session")
def speech_items(espeak_cache):
    """Four 1.5 s mixtures of 2, 3, 2, 3 espeak talkers at 8 kHz."""
    return make_items([2, 3, 2, 3], sample_rate=8000, seconds=1.5, cache=espeak_cache)


def filtered_noise(n_src: int, length: int, seed: int) -> np.ndarray:
    """``(n_src, length)`` coloured noises (one-pole low-pass filters), float64."""
    rng = np.random.default_rng(seed)
    return np.stack([lfilter([1.0], [1.0, -rng.uniform(0.5, 0.95)], rng.standard_normal(length))
                     * rng.uniform(0.3, 1.0) for _ in range(n_src)])


def distorted_estimates(refs: np.ndarray, seed: int, leak: float = 0.15, noise: float = 0.05,
                        filt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Estimates = shuffled (mixtures of refs + short-filtered ref + noise); returns (est, order)."""
    rng = np.random.default_rng(seed)
    n_src, length = refs.shape
    mixing = np.eye(n_src) + leak * rng.standard_normal((n_src, n_src)) * (1 - np.eye(n_src))
    est = mixing @ refs
    if filt:  # a short FIR distortion (inside bss_eval's 512-tap filter space)
        est = np.stack([lfilter(rng.standard_normal(8) * 0.1 + np.r_[1, np.zeros(7)], [1.0], e) for e in est])
    est = est + noise * rng.standard_normal((n_src, length)) * refs.std()
    order = rng.permutation(n_src)
    return est[order], order
