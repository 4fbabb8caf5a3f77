"""Small helpers: thread settings."""

import torch

from pyro_vae.utils import available_cpus, set_threads


def test_set_threads_order_of_precedence(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert set_threads() == available_cpus() == torch.get_num_threads()
        assert set_threads(processes=available_cpus() * 2) == 1  # never below one thread
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1 == torch.get_num_threads()
        assert set_threads(3) == 3 == torch.get_num_threads()  # an explicit number wins
        monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a number: ignored
        assert set_threads() == available_cpus()
    finally:
        torch.set_num_threads(before)
