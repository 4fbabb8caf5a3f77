"""Figures for a run, drawn on ``matplotlib.figure.Figure`` (no pyplot, no global state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.data import tile_images as _grid
from pyro_vae.infer.training import History


def plot_history(history: History) -> Figure:
    """Training loss, validation ELBO and bound per epoch (and beta when it changes)."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    epochs = history["epoch"]
    ax1.plot(epochs, history["train_loss"], label="train loss (-objective per point)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("nats per data point")
    ax1.legend()
    valid = np.asarray(history["valid_elbo"], dtype=float)
    if np.isfinite(valid).any():
        ax2.plot(epochs, valid, color="C1", label="validation ELBO")
        bound = np.asarray(history["valid_bound"], dtype=float)
        if not np.array_equal(bound, valid, equal_nan=True):  # the objective judges by another bound
            ax2.plot(epochs, bound, color="C3", label="validation bound (early stopping)")
        if history.best_epoch is not None:
            ax2.axvline(history.best_epoch, color="grey", ls=":", label=f"best epoch {history.best_epoch}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("nats per data point")
    betas = history["beta"]
    if len(set(betas)) > 1:
        twin = ax2.twinx()
        twin.plot(epochs, betas, color="C2", alpha=0.6, label="beta")
        twin.set_ylabel("beta")
    ax2.legend(loc="lower right")
    fig.suptitle("Training")
    return fig


def plot_reconstructions(
    x: torch.Tensor,
    reconstruction: torch.Tensor,
    image_shape: Sequence[int] | None,
    n: int = 16,
    names: Sequence[str] | None = None,
) -> Figure:
    """Inputs beside their reconstructions: image grids, or a feature heat map for tables."""
    x, rec = x[:n].cpu().numpy(), reconstruction[:n].cpu().numpy()
    if image_shape is None:
        # Features of a table have their own scales: show both in the inputs' per-feature z-scores.
        centre, spread = np.nanmean(x, 0), np.nanstd(x, 0)
        spread = np.where(spread > 0, spread, 1.0)
        x, rec = (x - centre) / spread, (rec - centre) / spread
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    lo, hi = np.nanmin(x), np.nanmax(x)
    for ax, data, title in zip(axes, (x, rec), ("inputs", "reconstructions (decoder mean)")):
        if image_shape is not None:
            ax.imshow(_grid(data, image_shape, rows=int(np.sqrt(len(data)))), cmap="gray", vmin=lo, vmax=hi)
            ax.axis("off")
        else:
            im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
            ax.set_xlabel("feature")
            if names is not None and len(names) <= 30:
                ax.set_xticks(range(len(names)), names, rotation=90)
            ax.set_ylabel("data point")
            fig.colorbar(im, ax=ax, label="z-score of the inputs, per feature")
        ax.set_title(title)
    return fig


def plot_samples(
    samples: torch.Tensor,
    image_shape: Sequence[int] | None,
    data: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> Figure:
    """Draws from the prior pushed through the decoder (image grid, or per-feature histograms)."""
    s = samples.cpu().numpy()
    if image_shape is not None:
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.subplots()
        draw_image_grid(ax, s, image_shape)
        ax.set_title("samples from the model (decoder mean at z ~ prior)")
        return fig
    k = min(6, s.shape[1])
    fig = Figure(figsize=(3 * k, 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, k))
    for j, ax in enumerate(axes):
        if data is not None:
            column = data[:, j].cpu().numpy()
            ax.hist(column[~np.isnan(column)], bins=30, density=True, alpha=0.5, label="data")
        ax.hist(s[:, j], bins=30, density=True, alpha=0.5, label="model")
        ax.set_title(names[j] if names is not None else f"feature {j}")
    axes[0].legend()
    fig.suptitle("model samples against data, per feature")
    return fig


def project_2d(means: torch.Tensor) -> tuple[np.ndarray, str]:
    """Codes as 2-D points, with a note on how they were drawn ("" when they are 2-D already).

    More than two dimensions: the first two principal components; one: a line at height 0.
    """
    m = means.detach().cpu().numpy()
    if m.shape[1] > 2:
        centred = m - m.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "first two principal components"
    if m.shape[1] == 1:
        return np.column_stack([m[:, 0], np.zeros(len(m))]), "one dimension"
    return m, ""


def draw_image_grid(ax, images: np.ndarray, image_shape: Sequence[int], **imshow: Any) -> None:
    """Images ``(n, h * w)`` as one square-ish grey-level grid on ``ax`` (``imshow``: e.g. vmin, vmax)."""
    ax.imshow(_grid(images, image_shape, rows=int(np.sqrt(len(images)))), cmap="gray", **imshow)
    ax.axis("off")


def draw_latent(ax, points: np.ndarray, labels: torch.Tensor | None = None, size: float = 6):
    """A scatter of 2-D codes, coloured by label when there are labels; returns the artist."""
    if labels is None:
        return ax.scatter(points[:, 0], points[:, 1], s=size)
    return ax.scatter(points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=size)


def plot_latent(means: torch.Tensor, labels: torch.Tensor | None = None) -> Figure:
    """Posterior means in 2-D (the first two principal components when latent_dim > 2)."""
    points, note = project_2d(means)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    sc = draw_latent(ax, points, labels)
    if labels is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_title("posterior means" + (f" ({note})" if note else ""))
    return fig
