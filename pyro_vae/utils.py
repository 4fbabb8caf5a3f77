"""Small shared helpers: argument checks, threads, seeds and devices (file writes: pyro_vae.io)."""

from __future__ import annotations

import ctypes
import operator
import os
import time

import numpy as np
import pyro
import torch

from pyro_vae.errors import ConfigError, NonFiniteError


def positive(name: str, value: float) -> float:
    """``value`` if it is a positive number, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return value


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``, else a ``ConfigError`` naming ``name``.

    Python and numpy integers are accepted (anything ``operator.index`` takes); ``bool``,
    floats (even ``2.0``) and strings are refused rather than converted.
    """
    try:
        number = None if isinstance(value, (bool, np.bool_)) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}")
    return number


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(num_threads: int | None = None, processes: int = 1) -> int:
    """Use at most one torch thread per available core and process.

    More threads than cores (common in containers, where torch counts the host's cores)
    slows small models down many times over. Without ``num_threads``, a positive integer in
    ``OMP_NUM_THREADS`` is honoured (a machine shared with other work), else the cores are
    shared among ``processes``.
    """
    n = num_threads or fixed_threads() or max(1, available_cpus() // processes)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def fixed_threads() -> int | None:
    """A thread count the environment fixes (a positive ``OMP_NUM_THREADS``), or None."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def progress_bar(iterable=None, *, enabled: bool, **options):
    """A tqdm bar on a terminal; elsewhere (logs, CI) one line at most every 30 seconds."""
    import sys

    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, disable=not enabled, mininterval=0.1 if tty else 30.0, **options)


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # seeds torch, numpy and random


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but torch sees no CUDA device; use device='cpu'")
    return device


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None


class HeapTrim:
    """Hand the C heap's free pages back to the system at most every ``interval`` seconds.

    With more than one torch thread, a long loop of large short-lived tensors (evaluation's
    chunks of K x D numbers) grew the resident memory of one ``evaluate`` call by about 1 MiB
    per MNIST point, 16.7 GiB over the 10000 test points (``eval_speed.json`` of 2026-11-29,
    before this; +373 MiB after); with one
    thread it stayed flat. glibc kept the freed blocks instead of returning or reusing them:
    one arena, a fixed mmap threshold or a zero trim threshold each removed the growth, and so
    does ``malloc_trim``. Trimming after every point made evaluation 50% slower (the pages
    are faulted in again); every 2 s bounds the growth at no measurable cost.
    """

    _trim = _malloc_trim()

    def __init__(self, interval: float = 2.0):
        self.interval = interval
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if self._trim is not None and now - self._last >= self.interval:
            self._trim(0)
            self._last = time.monotonic()


def check_finite_weights(vae: torch.nn.Module) -> None:
    """Raise :class:`~pyro_vae.errors.NonFiniteError` naming the tensors of ``vae`` that hold NaN or inf
    (evaluation, imputation and the commands read a model through it)."""
    bad = []
    for kind, named in (("parameter", vae.named_parameters()), ("buffer", vae.named_buffers())):
        for name, t in named:
            if (t.is_floating_point() or t.is_complex()) and not (finite := torch.isfinite(t)).all():
                bad.append(f"{kind} {name}: {int((~finite).sum())} of {t.numel()} values")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more tensors" if len(bad) > 3 else "")
        raise NonFiniteError(
            f"the model holds NaN or infinite weights ({shown}): the training that produced it "
            "diverged; retrain with a smaller learning rate or load an earlier checkpoint"
        )
