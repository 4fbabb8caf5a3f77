"""Same seed, data and machine: the same weights to the bit, whatever else the machine is doing.

The thread count changes the floating-point results of a model large enough for torch to
split its reductions between threads (the 784-input model below: one epoch at one thread
and at two ends in different weights), so fit fixes the count at the start from the
model's size and the machine's cores alone; the load-adaptive policy is an opt-in
(``adaptive_threads``).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from pyro_vae import VAE, fit
from pyro_vae.infer import thread_policy as policy


@pytest.fixture
def two_cores(monkeypatch):
    """A 2-core machine whose thread count nothing in the environment fixes."""
    monkeypatch.setattr(policy, "available_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(256, 784, generator=g) < 0.3).float()


def trained(x: torch.Tensor, **settings) -> tuple[dict[str, torch.Tensor], str]:
    """One epoch of a model whose steps pay for two threads; its weights and thread report."""
    vae = VAE(784, 4, hidden=(128,), likelihood="bernoulli")
    history = fit(vae, x, epochs=1, batch_size=128, progress=False, **settings)
    return {k: v.clone() for k, v in vae.state_dict().items()}, history.threads


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def neighbours_hold(monkeypatch, cores: float) -> None:
    """/proc/stat as if other processes kept ``cores`` cores busy."""
    start = time.perf_counter()
    monkeypatch.setattr(
        policy, "busy_cpu_seconds", lambda: policy.own_cpu_seconds() + cores * (time.perf_counter() - start)
    )


def test_the_thread_count_changes_this_models_weights(two_cores):
    x = data()
    one, _ = trained(x, num_threads=1)
    two, _ = trained(x, num_threads=2)
    assert not same(one, two)  # so a count that followed the load would change the results


def test_a_busy_machine_trains_the_weights_of_an_idle_one(two_cores, monkeypatch):
    x = data()
    neighbours_hold(monkeypatch, 0.0)
    idle, idle_threads = trained(x)
    neighbours_hold(monkeypatch, 1.0)  # a neighbour holds one of the two cores
    busy, busy_threads = trained(x)
    assert (
        idle_threads == busy_threads == "2 torch thread(s): one per core, fixed for the run whatever the load"
    )
    assert same(idle, busy)


def test_the_adaptive_policy_is_an_opt_in_that_follows_the_load(two_cores, monkeypatch):
    x = data()
    neighbours_hold(monkeypatch, 1.0)
    _, threads = trained(x, adaptive_threads=True)
    assert threads.startswith("1 torch thread(s): the cores other processes leave idle")


def test_a_real_busy_neighbour_changes_nothing(two_cores):
    x = data()
    alone, _ = trained(x)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the neighbour is running before training starts
        beside, _ = trained(x)
    finally:
        busy.kill()
        busy.wait()
    assert same(alone, beside)
