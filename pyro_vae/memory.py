"""The memory a training step and an evaluation chunk need, checked before a run writes anything.

A step holds the weights four to five times over (the weights, their gradients, Adam's two
moments and the best weights kept for early stopping) and, per data point, every number the
encoder produces plus, per particle, every number the decoder and the log-likelihood
produce, each kept for the backward pass with its gradient. An evaluation chunk holds the
decoder's numbers for each of its (draw, point) pairs, without gradients. The activations
are counted by one forward pass of a single point (on the ``meta`` device for a model not
yet built, so that even a model of a trillion weights costs nothing to measure).

The estimate is a lower bound of what torch allocates, so a run refused here could not have
fitted; a run let through may still need more (the allocator's slack, the data, Python).

This is part of the probabilistic core: it must not import from :mod:`pyro_vae.app`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pyro_vae.errors import ConfigError

BYTES_PER_NUMBER = 4  # float32 throughout
# Copies of each weight in a training step: the weight, its gradient, Adam's two moments and
# the best weights that early stopping keeps.
WEIGHT_COPIES = 5
# Copies of each activation in a training step: its value kept for the backward pass, its
# gradient, and one elementwise intermediate (softplus, log-probabilities) beside them.
ACTIVATION_COPIES = 3
# Numbers per feature that a log-likelihood makes beside the decoder's outputs (the
# log-probability and its terms).
LOG_PROB_NUMBERS = 2
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Numbers one data point makes: through the encoder, and per draw of z through the decoder."""

    weights: int
    encoder: int
    decoder: int

    def step_bytes(self, batch_size: int, num_particles: int) -> int:
        """Bytes of one training step of ``batch_size`` points and ``num_particles`` draws each."""
        per_point = self.encoder + num_particles * self.decoder
        return BYTES_PER_NUMBER * (WEIGHT_COPIES * self.weights + ACTIVATION_COPIES * batch_size * per_point)

    def chunk_bytes(self, pairs: int) -> int:
        """Bytes of one evaluation chunk of ``pairs`` (draw, point) pairs (no gradients)."""
        return BYTES_PER_NUMBER * (self.weights + 2 * pairs * self.decoder)


def _numels(output: Any) -> Iterator[int]:
    if isinstance(output, torch.Tensor):
        yield output.numel()
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from _numels(item)


def _counted_pass(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Numbers every leaf module of ``net`` produces for ``x`` (hooks on the leaves only, so a
    container's output is not counted twice)."""
    total = [int(x.numel())]

    def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        total[0] += sum(_numels(output))

    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(count) for m in leaves]
    # In eval mode: a batch norm in training mode would move its running statistics (and refuse
    # a batch of one), a dropout would draw from the random stream.
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    return total[0]


def footprint(vae: Any) -> Footprint:
    """The :class:`Footprint` of ``vae`` (a :class:`~pyro_vae.VAE`, on any device, ``meta`` too),
    measured by one forward pass of one point through its encoder and its decoder."""
    device = next(vae.parameters()).device
    features = vae.input_dim
    encoder = _counted_pass(vae.encoder, torch.zeros(1, *vae.input_shape, device=device))
    decoder = _counted_pass(vae.decoder, torch.zeros(1, vae.latent_dim, device=device))
    return Footprint(
        weights=sum(p.numel() for p in vae.parameters()),
        encoder=encoder,
        decoder=decoder + LOG_PROB_NUMBERS * features,
    )


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory this process can still take on ``device``: free GPU memory, or on the CPU the
    smaller of the kernel's ``MemAvailable`` and what the cgroup's limit leaves (None: unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found = [b for b in (_mem_available(), _cgroup_room()) if b is not None]
    return min(found) if found else None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (None without a limit, or off Linux)."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def _refuse(what: str, need: int, room: int, fix: str) -> ConfigError:
    return ConfigError(
        f"{what} needs about {_gib(need)} of memory, more than the {_gib(room)} available; {fix}"
    )


def check_model_size(build: Callable[[], Any], *, available: int | None = None) -> None:
    """Refuse a model whose weights alone cannot fit, before torch allocates them.

    ``build`` makes the model; it is called under ``torch.device("meta")``, which allocates
    nothing. A model that cannot be built there (a part that reads a value at construction)
    is not checked here: :func:`check_step` checks it once built.
    """
    try:
        with torch.device("meta"):
            model = build()
    except (RuntimeError, NotImplementedError):
        return
    weights = sum(p.numel() for p in model.parameters())
    need = BYTES_PER_NUMBER * WEIGHT_COPIES * weights
    room = available_bytes() if available is None else available
    if room is not None and need > room:
        raise _refuse(
            f"a model of {weights:,} weights (latent_dim {model.latent_dim}, hidden {list(model.hidden)}) "
            "trained with Adam",
            need,
            room,
            "lower model.latent_dim (--latent-dim; select: --latent-dims) or model.hidden (--hidden; select: --widths)",
        )


def check_step(
    vae: Any,
    batch_size: int,
    num_particles: int,
    *,
    device: torch.device | str = "cpu",
    available: int | None = None,
) -> None:
    """Refuse a training step that cannot fit in ``device``'s memory, naming the setting to lower.

    Args:
        vae: the model (built; its weights on any device).
        batch_size: data points per step.
        num_particles: draws of z per point and step.
        device: where the step runs.
        available: bytes free (default: :func:`available_bytes` of ``device``).

    Raises:
        ConfigError: the estimate exceeds what is free.
    """
    room = available_bytes(device) if available is None else available
    if room is None:
        return
    fp = footprint(vae)
    need = fp.step_bytes(batch_size, num_particles)
    if need <= room:
        return
    fixes = []
    if num_particles > 1:
        fixes.append("train.num_particles (--num-particles)")
    if batch_size > 1:
        fixes.append("train.batch_size (--batch-size)")
    fixes.append("model.hidden (--hidden)")
    raise _refuse(
        f"a training step of {batch_size} points x {num_particles} particles "
        f"({fp.decoder:,} numbers per particle through the decoder)",
        need,
        room,
        f"lower {' or '.join(fixes)}",
    )


def check_chunk(
    vae: Any,
    chunk_size: int,
    *,
    device: torch.device | str = "cpu",
    available: int | None = None,
    what: str | None = None,
    fix: str = "lower eval.chunk_size (--eval-chunk-size), or leave it unset to size it from the model",
) -> None:
    """Refuse ``chunk_size`` draws through the decoder at once (an evaluation chunk of (draw, point)
    pairs, or ``what``) that cannot fit in memory; ``fix`` says what to lower."""
    room = available_bytes(device) if available is None else available
    if room is None:
        return
    need = footprint(vae).chunk_bytes(chunk_size)
    if need > room:
        raise _refuse(what or f"an evaluation chunk of {chunk_size:,} (draw, point) pairs", need, room, fix)


def check_ais(
    vae: Any, chains: int, *, device: torch.device | str = "cpu", available: int | None = None
) -> None:
    """Refuse annealed importance sampling whose chains for one point cannot fit in memory: each
    chain's leapfrog steps hold the decoder's numbers with their gradients (no chunk splits them)."""
    room = available_bytes(device) if available is None else available
    if room is None:
        return
    fp = footprint(vae)
    need = BYTES_PER_NUMBER * (fp.weights + ACTIVATION_COPIES * chains * fp.decoder)
    if need > room:
        raise _refuse(
            f"annealed importance sampling with {chains:,} chains per point",
            need,
            room,
            "lower --ais-chains (evaluate's ais_chains)",
        )
