"""Suite-wide settings.

One torch thread per test (restored after): the test machines' two cores are shared with other
jobs, and with two OpenMP threads a busy core makes the other spin (the bundled-model test took
30 s instead of 1 s under load). A test that wants more threads sets them itself.

The voice activity detector that can gate counting (``separation.inference``, off by default) stays
off for the suite whatever the environment says (``VOXSEP_VAD=0``, inherited by the subprocesses
tests start): most tests feed synthetic signals that are not speech. The tests of the detector, and
of commands with it, turn it on explicitly.

``-m "not slow"`` leaves out the tests marked ``slow`` (training runs, DDP, kill-and-resume,
worker pools, end-to-end demo): the fast subset runs in under a minute; ``.ci/run`` runs all.
"""
import os

import pytest
import torch

os.environ["VOXSEP_VAD"] = "0"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
