"""Small helpers: thread settings, integer checks."""

import numpy as np
import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.utils import available_cpus, positive_int, set_threads


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


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2), np.array(5)])
def test_positive_int_accepts_python_and_numpy_integers(value):
    result = positive_int("n", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, -3, True, False, np.True_, 1.7, 64.5, 2.0, "3", None, [1]])
def test_positive_int_refuses_other_values_with_name_and_value(value):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer") as excinfo:
        positive_int("batch_size", value)
    assert repr(value) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)  # callers that catch ValueError keep working


def test_positive_int_minimum():
    assert positive_int("--nuts-points", 0, minimum=0) == 0
    assert positive_int("K", np.int32(2), 2) == 2
    with pytest.raises(ConfigError, match=r"K must be an integer >= 2, got 1"):
        positive_int("K", 1, 2)
    with pytest.raises(ConfigError, match=r"an integer >= 0, got 1\.5"):
        positive_int("--nuts-warmup", 1.5, 0)
