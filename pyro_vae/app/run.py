"""The main job: train, evaluate and report a VAE from a :class:`~pyro_vae.app.config.RunConfig`.

A run directory holds ``config.json`` (model and run settings, preprocessing),
``model.pt`` (weights), ``training_state.pt`` (optimizer state), ``history.csv``,
``metrics.json`` and the figures.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from pyro_vae import data as data_module
from pyro_vae import distributed as dist_utils
from pyro_vae import likelihoods
from pyro_vae.app import plotting
from pyro_vae.app.config import RunConfig
from pyro_vae.evaluation import evaluate
from pyro_vae.io import atomic_write_text, save_figure
from pyro_vae.model import VAE
from pyro_vae.objectives import BetaSchedule
from pyro_vae.training import TRAINING_STATE_FILE, History, fit
from pyro_vae.utils import seed_everything

FIGURES = ("training_curves.png", "reconstructions.png", "samples.png", "latent_means.png")


def load_data(cfg: RunConfig) -> data_module.DataSplits:
    d = cfg.data
    return data_module.load_dataset(
        d.dataset,
        data_dir=d.data_dir,
        path=d.path,
        label_column=d.label_column,
        dequantize=d.dequantize,
        standardize=d.standardize,
        seed=d.seed,
    )


def build_vae(cfg: RunConfig, num_features: int) -> VAE:
    m = cfg.model
    likelihood = m.likelihood
    if likelihood != "auto" or m.likelihood_options:
        likelihood = likelihoods.create(m.likelihood, **m.likelihood_options)
    return VAE(
        num_features,
        m.latent_dim,
        hidden=tuple(m.hidden),
        likelihood=likelihood,
        prior={"name": m.prior, "options": m.prior_options},
        activation=m.activation,
    )


def _public_metrics(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "pointwise"}


def evaluate_split(
    vae: VAE, splits: data_module.DataSplits, cfg: RunConfig, progress: bool
) -> dict[str, Any]:
    x, _ = splits.split(cfg.eval.split)
    result = evaluate(
        vae,
        x,
        cfg.eval.num_samples,
        chunk_size=cfg.eval.chunk_size,
        seed=cfg.train.seed,
        log_abs_det_jacobian=splits.preprocessing.log_abs_det_jacobian(splits.num_features),
        progress=progress,
    )
    return {"split": cfg.eval.split, **_public_metrics(result)}


def write_figures(
    out: Path, vae: VAE, splits: data_module.DataSplits, history: History | None, seed: int
) -> None:
    x, labels = splits.split("test")
    torch.manual_seed(seed)
    vae.eval()
    with torch.no_grad():
        figures = {
            "reconstructions.png": plotting.plot_reconstructions(
                splits.preprocessing.inverse(x[:16]),
                splits.preprocessing.inverse(vae.reconstruct(x[:16])),
                splits.image_shape,
            ),
            "samples.png": plotting.plot_samples(
                splits.preprocessing.inverse(vae.sample(64 if splits.image_shape else 2000, mean=True)),
                splits.image_shape,
                data=splits.preprocessing.inverse(x),
            ),
            "latent_means.png": plotting.plot_latent(vae.encode(x)[0], labels),
        }
    if history is not None:
        figures["training_curves.png"] = plotting.plot_history(history)
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=110)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_run(
    cfg: RunConfig, out: str | Path, *, progress: bool = True, resume: bool = False, echo=print
) -> dict[str, Any]:
    """Train, evaluate and write a run directory; returns the metrics.

    Under ``torchrun`` every process trains its share with DDP and process 0 alone
    prints and writes. ``resume=True`` continues the run in ``out`` from its last epoch.
    """
    out = Path(out)
    distributed = launched_by_torchrun()
    ctx = dist_utils.setup(cfg.train.device, cfg.train.ddp_timeout_s) if distributed else dist_utils.SINGLE
    if not ctx.is_main:
        echo = _silent
    splits = load_data(cfg)
    echo(f"data    {splits.summary()}")
    t = cfg.train
    if resume:
        vae = VAE.load(out)
        echo(f"resume  from {out}/{TRAINING_STATE_FILE}")
    else:
        seed_everything(t.seed)  # the initial weights are part of the run
        vae = build_vae(cfg, splits.num_features)
        name, reason = vae.resolve_likelihood(splits.train)
        if reason is not None:
            echo(f"model   likelihood 'auto' -> {name!r} ({reason})")
    extra = {"run": cfg.to_dict(), "preprocessing": splits.preprocessing.to_dict()}
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            vae.save(out, extra=extra)  # the run's settings are on disk before training starts
    if distributed:
        echo(
            f"ddp     {ctx.world_size} processes, {'nccl' if ctx.device.type == 'cuda' else 'gloo'}, batch {t.batch_size} each"
        )
    echo(
        f"model   likelihood {vae.likelihood.name}, prior {vae.prior.name}, latent {vae.latent_dim}, "
        f"hidden {list(vae.hidden)}; loss {t.loss} x{t.num_particles}, beta {t.beta}"
        + (f" (warm-up {t.warmup_epochs} epochs)" if t.warmup_epochs else "")
    )
    start = time.perf_counter()
    history = fit(
        vae,
        splits.train_dataset(seed=t.seed),
        splits.valid,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        loss=t.loss,
        num_particles=t.num_particles,
        beta=BetaSchedule(end=t.beta, warmup_epochs=t.warmup_epochs),
        seed=t.seed,
        device=t.device,
        progress=progress,
        patience=t.patience,
        checkpoint_dir=out,
        num_threads=t.num_threads,
        distributed=distributed,
        resume=resume,
        max_seconds=None if t.max_minutes is None else 60 * t.max_minutes,
        timeout_s=t.ddp_timeout_s,
    )
    train_seconds = time.perf_counter() - start
    metrics = evaluate_split(vae, splits, cfg, progress and ctx.is_main)  # sharded under DDP
    if not ctx.is_main:
        return metrics
    history.to_csv(out / "history.csv")
    vae.save(out, extra=extra)
    metrics["training"] = {
        "epochs": len(history),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "seconds": train_seconds,
        "likelihood": vae.likelihood.name,
        "prior": vae.prior.name,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_figures(out, vae, splits, history, t.seed)
    echo(
        f"train   {len(history)} epochs in {train_seconds:.1f} s"
        + (f", best validation ELBO at epoch {history.best_epoch}" if history.best_epoch else "")
        + (" (early stop)" if history.stopped_early else "")
    )
    echo(summary_line(metrics, vae))
    echo(f"wrote   {out}/: config.json model.pt metrics.json history.csv {' '.join(FIGURES)}")
    return metrics


def _silent(*args, **kwargs) -> None:
    pass


def summary_line(m: dict[str, Any], vae: VAE) -> str:
    line = (
        f"{m['split']:7} {m['num_points']} points, K={m['num_samples']}: log p(x) {m['log_likelihood']:.2f} "
        f"± {m['log_likelihood_se']:.2f} nats, ELBO {m['elbo']:.2f}, KL {m['kl']:.2f}, "
        f"reconstruction {m['reconstruction']:.2f}, active units {m['active_units']}/{vae.latent_dim}"
    )
    if "bits_per_dim" in m and math.isfinite(m["bits_per_dim"]):
        line += f", {m['bits_per_dim']:.3f} bits/dim"
    return line


def load_run(
    run_dir: str | Path, *, split: str | None = None, data_dir: str | None = None
) -> tuple[RunConfig, VAE, data_module.DataSplits]:
    """A saved run's config (``split`` and ``data_dir`` overridden when given), model and data."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_json(run_dir)
    if split is not None:
        cfg.eval.split = split
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    return cfg, VAE.load(run_dir), load_data(cfg)


def evaluate_run(
    run_dir: str | Path,
    *,
    num_samples: int | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    echo=print,
) -> dict[str, Any]:
    """Re-evaluate a saved run on its data (optionally another split or K)."""
    cfg, vae, splits = load_run(run_dir, split=split, data_dir=data_dir)
    if num_samples is not None:
        cfg.eval.num_samples = num_samples
    metrics = evaluate_split(vae, splits, cfg, progress)
    echo(summary_line(metrics, vae))
    return metrics
