r"""How evaluation splits its work: chunks of (draw, data point) pairs sized to the cache, the
batches of points, and draws seeded apart from the global random streams.

Shared by importance sampling (:mod:`pyro_vae.infer.evaluation`), AIS (:mod:`pyro_vae.infer.ais`),
imputation and the diagnostics; it knows the VAE only through its attributes and its
log-density seam (:meth:`~pyro_vae.model.VAE.log_weights`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import pyro
import torch

from pyro_vae.data.arrays import iter_batches
from pyro_vae.errors import ConfigError
from pyro_vae.utils import HeapTrim

# The VAE (pyro_vae.model) imports this module (through imputation): it is typed here by what it
# does, not imported.
VAE = Any

# Numbers per intermediate of a chunk: 2**20 floats (4 MiB; 1250 draws x 784 pixels) keeps a
# chunk's elementwise passes (log-probabilities, activations) in a core's L2 cache. On this
# 2-core Xeon (2 MiB L2 per core), one thread: 8.3 us per (draw, point) at 625-1250 draws,
# 13-14 at 1667-2500; eval_speed.json's chunk_scan measures it with the benchmark's threads.
CHUNK_ELEMENTS = 2**20


def default_chunk_size(vae: VAE, elements: int = CHUNK_ELEMENTS) -> int:
    """(sample, data point) pairs per chunk so that no intermediate exceeds ``elements`` numbers."""
    per_pair = max(
        vae.input_dim * vae.likelihood.num_params,
        getattr(vae.decoder, "widest", 0),  # the decoder's largest layer (feature maps of a conv)
        max(vae.hidden, default=0),
        getattr(vae.prior, "num_components", 1),
    )
    return max(1, elements // per_pair)


def _rng_neutral(batches):
    """Yield from ``batches`` without letting the loading touch the CPU random stream.

    A ``DataLoader`` draws its base seed from it; without this, the same seed would give
    different samples of ``z`` for a tensor and for a loader over the same data.
    """
    while True:
        with torch.random.fork_rng(devices=[]):
            x = next(batches, None)
        if x is None:
            return
        yield x


def chunk_plan(num_samples: int, chunk_size: int) -> tuple[int, int]:
    """(draws, points) per chunk: at most ``chunk_size`` (sample, data point) pairs at once.

    The draws are split into equal chunks (5000 as 2500 + 2500, not 2674 + 2326): tensors of
    one size are reused by the allocator, two alternating sizes made evaluation 15% slower.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    pieces = math.ceil(num_samples / min(num_samples, chunk_size))
    k_chunk = math.ceil(num_samples / pieces)
    return k_chunk, max(1, chunk_size // k_chunk)


def point_batches(vae: VAE, data: Any, points: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Checked, non-empty batches of ``points`` data points on ``device``, in order.

    Between batches the C heap's free memory is returned (:class:`~pyro_vae.utils.HeapTrim`)
    so that a long evaluation stays flat in memory.
    """
    trim = HeapTrim()
    for x in _rng_neutral(iter_batches(data, points)):
        if x.shape[0] == 0:
            continue
        x = x.to(device)
        vae.check_data(x)
        yield x
        trim()


def weight_chunks(vae: VAE, x: torch.Tensor, num_samples: int, draws: int) -> Iterator[Any]:
    """:meth:`~pyro_vae.model.VAE.log_weights` for ``num_samples`` draws per point of ``x``,
    ``draws`` at a time."""
    remaining = num_samples
    while remaining > 0:
        k = min(draws, remaining)
        remaining -= k
        yield vae.log_weights(x, k)


@contextlib.contextmanager
def sampling(vae: VAE, seed: int, device: torch.device) -> Iterator[None]:
    """Draws seeded by ``seed`` in eval mode, leaving the global random streams and the mode alone."""
    was_training = vae.training
    vae.eval()
    try:
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            pyro.validation_enabled(False),
        ):
            torch.manual_seed(seed)
            yield
    finally:
        vae.train(was_training)
