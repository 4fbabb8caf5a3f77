"""Model selection: the latent size and the widths that suit the data, by validation log p(x).

:func:`select` trains one VAE per candidate (latent size x hidden widths) with :func:`fit`
and keeps the one whose importance-sampled log p(x) on the validation data is highest;
it says what it picked and what every candidate scored. Each candidate costs one ``fit``:
on a table of a few hundred rows seconds, on MNIST-sized data hours (there, the defaults
are the choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyro_vae.data import DataSplits, as_tensor
from pyro_vae.errors import ConfigError
from pyro_vae.infer.evaluation import evaluate
from pyro_vae.infer.training import History, fit
from pyro_vae.model import VAE

LATENT_DIMS = (2, 4, 8)
HIDDEN = ((64, 64), (256, 256))
NUM_SAMPLES = 200


@dataclass
class Selection:
    """The chosen ``vae`` (trained), its ``history``, and every candidate's score:
    ``candidates`` holds ``latent_dim``, ``hidden``, ``valid_log_likelihood`` (nats per
    point, model units), ``epochs`` and ``best_epoch``, in the order tried."""

    vae: VAE
    history: History
    latent_dim: int
    hidden: tuple[int, ...]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        scores = ", ".join(
            f"latent {c['latent_dim']} hidden {_widths(c['hidden'])}: {c['valid_log_likelihood']:.3f}"
            for c in self.candidates
        )
        best = max(c["valid_log_likelihood"] for c in self.candidates)
        return (
            f"select chose latent {self.latent_dim}, hidden {_widths(self.hidden)} "
            f"(validation log p(x) {best:.3f} nats per point; candidates: {scores})"
        )


def _widths(hidden: Sequence[int]) -> str:
    return ",".join(map(str, hidden)) or "linear"


def select(
    train: Any,
    valid: Any = None,
    *,
    latent_dims: Sequence[int] = LATENT_DIMS,
    hidden: Sequence[Sequence[int]] = HIDDEN,
    num_samples: int = NUM_SAMPLES,
    likelihood: Any = "auto",
    prior: Any = "standard_normal",
    build: Callable[[int, tuple[int, ...]], VAE] | None = None,
    progress: bool = False,
    **settings: Any,
) -> Selection:
    """Train a VAE for each latent size and hidden widths; keep the best by validation log p(x).

    Args:
        train, valid: as for :func:`fit` (a :class:`~pyro_vae.data.DataSplits` brings its
            validation set); validation data are required.
        latent_dims, hidden: the candidates (every pair is tried).
        num_samples: importance samples per validation point for log p(x).
        likelihood, prior: passed to every :class:`~pyro_vae.model.VAE`.
        build: instead, makes each candidate's untrained VAE from ``(latent_dim, hidden)``.
        settings: :func:`fit`'s settings (``epochs``, ``seed``, ...), the same for every candidate.

    Returns:
        a :class:`Selection`; its ``history.notes`` ends with :meth:`Selection.summary`.
    """
    if isinstance(train, DataSplits):
        valid = train.valid if valid is None else valid
        input_dim = train.num_features
    else:
        input_dim = as_tensor(train).shape[1:]
    if valid is None:
        raise ConfigError("select needs validation data to choose by: pass valid=... or a DataSplits")
    if not latent_dims or not hidden:
        raise ConfigError("select needs at least one latent size and one set of hidden widths")
    best: tuple[float, VAE, History] | None = None
    candidates = []
    for latent_dim in latent_dims:
        for widths in hidden:
            if build is not None:
                vae = build(latent_dim, tuple(widths))
            else:
                vae = VAE(input_dim, latent_dim, hidden=tuple(widths), likelihood=likelihood, prior=prior)
            history = fit(vae, train, valid, progress=progress, **settings)
            score = evaluate(vae, valid, num_samples=num_samples, seed=0, kl_per_dim=False)["log_likelihood"]
            candidates.append(
                {
                    "latent_dim": latent_dim,
                    "hidden": tuple(widths),
                    "valid_log_likelihood": score,
                    "epochs": len(history),
                    "best_epoch": history.best_epoch,
                }
            )
            if math.isfinite(score) and (best is None or score > best[0]):
                best = (score, vae, history)
    if best is None:
        raise ConfigError("no candidate reached a finite validation log p(x)")
    _, vae, history = best
    selection = Selection(vae, history, vae.latent_dim, tuple(vae.hidden), candidates)
    history.notes.append(selection.summary())
    return selection
