"""Small helpers: thread settings, integer checks."""

import numpy as np
import pytest
import torch

from pyro_vae import utils
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


def test_heap_trim_runs_at_most_once_per_interval(monkeypatch):
    calls, clock = [], [100.0]
    monkeypatch.setattr(utils.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(utils.HeapTrim, "_trim", staticmethod(lambda pad: calls.append(pad)))
    trim = utils.HeapTrim(interval=2.0)
    trim()
    clock[0] += 1.9
    trim()
    assert calls == []  # too soon: a trim per chunk costs page faults
    clock[0] += 0.2
    trim()
    trim()
    assert calls == [0]
    clock[0] += 2.0
    trim()
    assert calls == [0, 0]


def test_heap_trim_is_a_no_op_without_malloc_trim(monkeypatch):
    monkeypatch.setattr(utils.HeapTrim, "_trim", None)
    trim = utils.HeapTrim(interval=0.0)
    trim()  # nothing to call, nothing raised


def test_evaluation_batches_trim_the_heap(monkeypatch):
    from pyro_vae.infer import evaluation
    from pyro_vae.model import VAE

    calls, ticks = [], iter(range(0, 1000, 10))  # 10 s between readings: every batch may trim
    monkeypatch.setattr(utils.time, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(utils.HeapTrim, "_trim", staticmethod(lambda pad: calls.append(pad)))
    vae = VAE(4, 2, hidden=(8,))
    batches = list(evaluation.point_batches(vae, torch.rand(6, 4).round(), 2, torch.device("cpu")))
    assert len(batches) == 3 and calls == [0, 0, 0]
