"""Engine test fixtures (no Django needed). Torch runs single-threaded here: on a shared,
oversubscribed CPU, spin-waiting OpenMP threads make the small ops of these tests crawl."""

import pytest
import torch

from .synthetic import make_dataset


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"))
