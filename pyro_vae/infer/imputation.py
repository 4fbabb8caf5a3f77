r"""Imputation of missing (NaN) cells by importance sampling (Mattei and Frellsen, 2019).

For a point with observed part :math:`x_o`, draw :math:`z_k \sim q(z \mid x_o)`,
:math:`k = 1..K`, with weights

.. math::
    w_k \propto \frac{p(x_o \mid z_k)\,p(z_k)}{q(z_k \mid x_o)}, \qquad \textstyle\sum_k w_k = 1,

so that :math:`\sum_k w_k\, \mathbb E[x_m \mid z_k]` estimates the conditional mean
:math:`\mathbb E[x_m \mid x_o]` (self-normalised importance sampling, consistent as
:math:`K \to \infty`), and resampling :math:`z` by the weights, then drawing
:math:`x_m \sim p(x_m \mid z)`, gives draws from :math:`p(x_m \mid x_o)` for multiple
imputation. A categorical column is filled with its most probable level under the weighted
mixture of its probabilities.
"""

from __future__ import annotations

from typing import Any

import torch

from pyro_vae.data.arrays import as_tensor
from pyro_vae.errors import UsageError
from pyro_vae.infer.chunking import CHUNK_ELEMENTS, sampling
from pyro_vae.utils import check_finite_weights, positive_int

# The VAE (pyro_vae.model) calls this module, so it is typed here by what it does, not imported.
VAE = Any


@torch.no_grad()
def impute(
    vae: VAE, x: torch.Tensor, num_samples: int = 1000, *, draws: bool = False, seed: int = 0
) -> torch.Tensor:
    """``x`` (model space) with its NaN cells filled; observed cells are returned unchanged.

    ``draws=False``: the conditional mean :math:`\\mathbb E[x_m \\mid x_o]` estimated with
    ``num_samples`` importance draws, ``(n, *input_shape)``; ``draws=True``: ``num_samples``
    importance-resampled draws from :math:`p(x_m \\mid x_o)` for multiple imputation,
    ``(num_samples, n, *input_shape)``. Draws are seeded by ``seed``.
    """
    positive_int("num_samples", num_samples)
    if not isinstance(x, torch.Tensor):
        x = as_tensor(x)
    if not vae.missing and bool(torch.isnan(x).any()):
        raise UsageError(
            "impute fills NaN cells, but this VAE was built without missing=True (its encoder cannot read "
            "a row with a missing cell): train one built with VAE(..., missing=True), or fit an untrained "
            "VAE on data holding NaN cells (fit then builds it so)"
        )
    check_finite_weights(vae)  # NaN weights would fill every cell with NaN, without a word
    vae.check_data(x)
    device = vae.device
    x = vae.shaped(x.to(device, torch.float32))
    per_point = num_samples * vae.input_dim * max(vae.likelihood.num_params, 2)
    rows = max(1, CHUNK_ELEMENTS // per_point)
    out = []
    with sampling(vae, seed, device):
        for batch in x.split(rows):
            out.append(_impute_batch(vae, batch, num_samples, draws))
    filled = torch.cat(out, -len(vae.input_shape) - 1)
    return torch.where(torch.isnan(x), filled, x)


def _impute_batch(vae: VAE, x: torch.Tensor, k: int, draws: bool) -> torch.Tensor:
    w = vae.log_weights(x, k)
    log_w, z = w.log_w, w.z  # (k, n), (k, n, latent_dim)
    filled, observed = vae.observed_part(x)
    if not draws:
        weights = torch.softmax(log_w, 0)
        return vae.likelihood.weighted_mean(_missing_given_observed(vae, z, filled, observed), weights)
    pick = torch.distributions.Categorical(logits=log_w.T).sample((k,))  # (k, n) indices of draws
    chosen = z.gather(0, pick.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
    return _missing_given_observed(vae, chosen, filled, observed).sample()


def _missing_given_observed(vae: VAE, z: torch.Tensor, x: torch.Tensor, observed: torch.Tensor | None):
    """:math:`p(x_m \\mid x_o, z)`: the decoder's distribution at ``z``, conditioned on the
    observed cells where the likelihood's noise correlates the cells (``Likelihood.given``)."""
    d = vae.likelihood(vae.decoder(z))
    return d if observed is None else vae.likelihood.given(d, x, observed)
