"""One intra-op thread for the tiny-model tests: on a shared 2-core box, OpenMP threads spinning against other
processes make each tiny forward 10-50x slower (measured 0.02 s with one thread, 0.15-1 s with two under load)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
