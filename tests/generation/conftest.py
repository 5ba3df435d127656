"""Generation tests run single-threaded: their tensors are tiny, and OpenMP threads that wait for
each other on a loaded 2-core machine make every small op slow."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
