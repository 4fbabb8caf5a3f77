"""Diagnostic figures on ``matplotlib.figure.Figure`` (no pyplot state), like :mod:`pyro_vae.app.plotting`.

This module depends on numpy, ArviZ and matplotlib only (and :func:`pyro_vae.data.tile_images`):
the figures take the result objects of :mod:`~pyro_vae.diagnostics.amortized` and
:mod:`~pyro_vae.diagnostics.nuts` by duck typing (the attributes in :class:`KhatLike` and
:class:`NutsLike`), so those modules import this one and never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import arviz as az
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from pyro_vae.data import tile_images as _grid


class KhatLike(Protocol):
    """What :func:`plot_khat` reads (a :class:`~pyro_vae.diagnostics.PsisResult` has it)."""

    khat: np.ndarray  # (n,) Pareto k-hat per point
    index: np.ndarray  # (n,) the points' positions
    num_samples: int


class NutsLike(Protocol):
    """What :func:`plot_nuts_overlay` reads (a :class:`~pyro_vae.diagnostics.NutsResult` has it)."""

    idata: az.InferenceData  # posterior "z" with dims (chain, draw, obs, latent)
    index: np.ndarray
    labels: np.ndarray | None
    mean: np.ndarray  # (points, latent): NUTS means, sds and r-hats; q's locations and scales
    sd: np.ndarray
    r_hat: np.ndarray
    q_loc: np.ndarray
    q_scale: np.ndarray
    num_chains: int
    draws: int


_BANDS = ((0.5, "C2", "k < 0.5"), (0.7, "C1", "0.5-0.7"), (1.0, "C3", "0.7-1"), (np.inf, "C4", "k > 1"))


def plot_khat(psis: KhatLike) -> Figure:
    """Pareto k-hat per data point, coloured by band, with the 0.5 / 0.7 / 1.0 thresholds."""
    k = np.asarray(psis.khat, dtype=float)
    index = np.asarray(psis.index)
    finite = np.isfinite(k)
    top = max(1.2, float(np.max(k[finite])) + 0.05) if finite.any() else 1.2
    bottom = min(0.0, float(np.min(k[finite])) - 0.05) if finite.any() else 0.0
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    lower = -np.inf
    for upper, colour, label in _BANDS:
        sel = finite & (k > lower) & (k <= upper)
        if sel.any():
            ax.scatter(index[sel], k[sel], s=10, color=colour, label=f"{label}: {sel.mean():.1%}")
        lower = upper
    for t, style in zip((0.5, 0.7, 1.0), (":", "--", "-")):
        ax.axhline(t, color="grey", ls=style, lw=1)
    for sel, y, marker, label in (
        (np.isposinf(k), top, "^", "too few draws to fit"),
        (np.isnan(k), bottom, "v", "constant weights (no tail)"),
    ):
        if sel.any():
            ax.scatter(index[sel], np.full(sel.sum(), y), s=30, marker=marker, color="k", label=label)
    ax.set_xlabel("data point")
    ax.set_ylabel("Pareto k-hat")
    ax.set_title(
        f"PSIS k-hat of q(z|x) as importance sampler, K={psis.num_samples}: "
        f"{np.mean(k > 0.7):.1%} of points above 0.7"
    )
    ax.legend(loc="upper left", fontsize="small", ncols=2)
    return fig


def _q_density(loc: float, scale: float, grid: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((grid - loc) / scale) ** 2) / (scale * np.sqrt(2 * np.pi))


def plot_nuts_overlay(nuts: NutsLike, max_points: int = 4, max_dims: int = 6) -> Figure:
    """Per point (row): NUTS marginals (histograms) against q's Gaussian densities.

    With more than ``max_dims`` latent dimensions the most discrepant ones are shown
    (largest standardised mean difference plus log ratio of the standard deviations).
    For a 2-D latent each row ends with the joint NUTS draws and q's 1- and 2-sd ellipses.
    """
    z = nuts.idata.posterior["z"].transpose("chain", "draw", "obs", "latent").values
    m = min(len(nuts.index), max_points)
    latent_dim = z.shape[-1]
    joint = latent_dim == 2
    cols = min(latent_dim, max_dims) + joint
    fig = Figure(figsize=(2.8 * cols, 2.4 * m + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(m, cols, squeeze=False))
    for i in range(m):
        draws = z[:, :, i].reshape(-1, latent_dim)
        score = np.abs(nuts.mean[i] - nuts.q_loc[i]) / nuts.sd[i] + np.abs(
            np.log(nuts.q_scale[i] / nuts.sd[i])
        )
        dims = np.sort(np.argsort(-score)[:max_dims]) if latent_dim > max_dims else np.arange(latent_dim)
        name = f"point {nuts.index[i]}" + ("" if nuts.labels is None else f" (label {nuts.labels[i]})")
        for col, j in enumerate(dims):
            ax = axes[i, col]
            lo = min(draws[:, j].min(), nuts.q_loc[i, j] - 4 * nuts.q_scale[i, j])
            hi = max(draws[:, j].max(), nuts.q_loc[i, j] + 4 * nuts.q_scale[i, j])
            grid = np.linspace(lo, hi, 200)
            ax.hist(draws[:, j], bins=40, density=True, alpha=0.5, color="C0", label="NUTS p(z|x)")
            ax.plot(grid, _q_density(nuts.q_loc[i, j], nuts.q_scale[i, j], grid), color="C1", label="q(z|x)")
            ax.set_title(f"{name}, z[{j}]  r-hat {nuts.r_hat[i, j]:.3f}", fontsize="small")
            ax.set_yticks([])
        if joint:
            ax = axes[i, -1]
            ax.scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.3, color="C0")
            for n_sd in (1, 2):
                ax.add_patch(
                    Ellipse(
                        (nuts.q_loc[i, 0], nuts.q_loc[i, 1]),
                        2 * n_sd * nuts.q_scale[i, 0],
                        2 * n_sd * nuts.q_scale[i, 1],
                        fill=False,
                        color="C1",
                        lw=1.5,
                    )
                )
            ax.set_xlabel("z[0]")
            ax.set_ylabel("z[1]")
            ax.set_title("NUTS draws; q: 1 and 2 sd", fontsize="small")
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(
        f"exact posterior (NUTS, {nuts.num_chains} x {nuts.draws} draws) against the encoder's q(z|x)"
    )
    return fig


def plot_ppc(
    idata: az.InferenceData,
    image_shape: Sequence[int] | None = None,
    *,
    num_points: int = 8,
    num_draws: int = 7,
    max_features: int = 12,
    seed: int = 0,
) -> Figure:
    """Posterior predictive check of :func:`~pyro_vae.diagnostics.to_inference_data` output.

    Images (``image_shape``, as in :class:`pyro_vae.data.DataSplits`): each row is an
    input beside ``num_draws`` draws of :math:`\\tilde x \\sim p(x \\mid z), z \\sim q(z \\mid x)`.
    Tables: ``az.plot_ppc`` per feature (the first ``max_features``), the observed
    distribution of each feature over the points against the posterior predictive ones.
    """
    observed = idata.observed_data["x"].transpose("obs", "feature").values
    predictive = idata.posterior_predictive["x"].transpose("chain", "draw", "obs", "feature").values
    if image_shape is not None:
        n = min(num_points, observed.shape[0])
        k = min(num_draws, predictive.shape[0] * predictive.shape[1])
        draws = predictive.reshape(-1, *predictive.shape[2:])[:k]  # (k, obs, feature)
        images = np.stack([np.concatenate([observed[i : i + 1], draws[:, i]]) for i in range(n)])
        fig = Figure(figsize=(1.0 * (k + 1) + 0.5, 1.0 * n + 0.6), layout="constrained")
        ax = fig.subplots()
        ax.imshow(_grid(images.reshape(-1, observed.shape[1]), image_shape, rows=n), cmap="gray")
        ax.axvline(image_shape[1], color="C3", lw=1.5)  # the gap between inputs and draws
        ax.axis("off")
        ax.set_title("input (left) and posterior predictive draws x ~ p(x|z), z ~ q(z|x)", fontsize="small")
        return fig
    features = idata.observed_data["feature"].values[:max_features]
    cols = min(4, len(features))
    rows = int(np.ceil(len(features) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    draws = predictive.shape[0] * predictive.shape[1]
    az.plot_ppc(
        idata,
        var_names=["x"],
        coords={"feature": features},
        flatten=["obs"],
        num_pp_samples=min(draws, 50),
        random_seed=seed,
        ax=axes[: len(features)],
        textsize=8,
        show=False,
    )
    for ax, feature in zip(axes, features):
        ax.set_xlabel(f"feature {feature}")
        if ax is not axes[0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle("posterior predictive check per feature: observed against x ~ p(x|z), z ~ q(z|x)")
    return fig
