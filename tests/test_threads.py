"""The thread policy (pyro_vae.infer.thread_policy): what it chooses for a model's size and a machine's load."""

from __future__ import annotations

import pytest
import torch

import pyro_vae
from pyro_vae.infer import thread_policy as threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # The start-up probe sees an idle machine: no CPU time but our own (tests set the load).
    monkeypatch.setattr(threads, "busy_cpu_seconds", threads.own_cpu_seconds)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def big():
    return 4 * threads.MIN_WORK_PER_THREAD


def test_a_small_model_gets_one_thread(four_cores):
    policy = threads.ThreadPolicy(None, work=threads.MIN_WORK_PER_THREAD / 2)
    assert policy.threads == 1 and torch.get_num_threads() == 1
    assert "too small" in policy.reason


def test_the_users_count_is_kept_whatever_the_load(four_cores, monkeypatch):
    policy = threads.ThreadPolicy(3, work=1.0)
    assert policy.threads == 3 and policy.reason == "3 torch threads, as set"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.ThreadPolicy(None, work=big()).threads == 2


def busy_neighbours(monkeypatch, cores: float) -> None:
    """The machine's busy CPU time grows as if other processes kept ``cores`` cores busy."""
    start = threads.time.perf_counter()
    monkeypatch.setattr(
        threads,
        "busy_cpu_seconds",
        lambda: threads.own_cpu_seconds() + cores * (threads.time.perf_counter() - start),
    )


def test_by_default_the_count_ignores_the_load(four_cores, monkeypatch):
    busy_neighbours(monkeypatch, 3.0)
    policy = threads.ThreadPolicy(None, work=big(), recheck_s=0.0)
    assert policy.threads == 4 and torch.get_num_threads() == 4  # not the one core left idle
    for _ in range(3):
        policy.start_epoch()
        threads.time.sleep(0.01)
        policy.end_epoch(1.0)
    assert policy.threads == 4 and "fixed for the run" in policy.summary()


def test_the_adaptive_policy_leaves_busy_cores_at_the_start(four_cores, monkeypatch):
    busy_neighbours(monkeypatch, 3.0)
    policy = threads.ThreadPolicy(None, work=big(), adaptive=True)
    assert policy.threads == 1 and "the cores other processes leave idle" in policy.reason


def test_cores_held_by_other_processes_are_left_to_them(four_cores):
    policy = threads.ThreadPolicy(None, work=big(), adaptive=True)
    assert policy.limit == 4
    assert policy.allowed(0.0) == 4
    assert policy.allowed(0.2) == 4  # a fifth of a core is noise
    assert policy.allowed(0.5) == 3  # half a core held: our thread there would wait on it
    assert policy.allowed(1.9) == 2
    assert policy.allowed(9.0) == 1  # never fewer than one
    assert policy.allowed(None) == 4  # no /proc/stat: the size decides


def test_the_count_follows_the_load_during_training(four_cores):
    policy = threads.ThreadPolicy(None, work=big(), recheck_s=0.0, adaptive=True)
    policy.load.foreign, policy.load.wall = 2.0, 1.0  # a neighbour held two cores
    policy.end_epoch(1.0)
    assert policy.threads == 4  # one reading may be a process starting or exiting
    policy.load.foreign, policy.load.wall = 2.0, 1.0  # and still does
    policy.end_epoch(1.0)
    assert policy.threads == 2 and torch.get_num_threads() == 2
    policy.load.foreign, policy.load.wall = 0.0, 1.0  # then an idle machine: back at once
    policy.end_epoch(1.0)
    assert policy.threads == 4 and torch.get_num_threads() == 4
    assert policy.summary().endswith("the load changed the count: 2 s at 4, 1 s at 2 thread(s)")


def test_one_busy_reading_between_idle_ones_keeps_the_threads(four_cores):
    policy = threads.ThreadPolicy(None, work=big(), recheck_s=0.0, adaptive=True)
    for foreign in (0.0, 1.5, 0.0, 1.5, 0.0):
        policy.load.foreign, policy.load.wall = foreign, 1.0
        policy.end_epoch(1.0)
        assert policy.threads == 4
    assert policy.summary() == policy.reason  # never changed: nothing to add


def test_two_busy_readings_drop_to_the_larger_of_their_counts(four_cores):
    policy = threads.ThreadPolicy(None, work=big(), recheck_s=0.0, adaptive=True)
    for foreign in (2.9, 1.0):  # asked for 1, then 3: the neighbour is leaving
        policy.load.foreign, policy.load.wall = foreign, 1.0
        policy.end_epoch(1.0)
    assert policy.threads == 3


def test_the_work_of_a_step_is_batch_times_weights():
    vae = pyro_vae.VAE(10, 2, hidden=(4,), likelihood="bernoulli")
    weights = sum(p.numel() for p in vae.parameters())
    assert threads.work_per_step(vae, 32) == 32 * weights
