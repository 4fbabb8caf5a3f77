"""Training: a PyTorch loop over Pyro's ELBO.

Each step evaluates ``elbo.differentiable_loss(vae.model, vae.guide, x, beta)``, the
surrogate loss Pyro derives from the model and guide, and steps ``torch.optim.Adam`` on
the VAE's parameters. Nothing about the loss is written here.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pyro_vae.data import as_tensor, features_of, make_loader
from pyro_vae.evaluation import validation_elbo
from pyro_vae.model import VAE
from pyro_vae.objectives import BetaSchedule, make_elbo
from pyro_vae.utils import atomic_torch_save, resolve_device, seed_everything, set_threads

logger = logging.getLogger(__name__)

TRAINING_STATE_FILE = "training_state.pt"
HISTORY_COLUMNS = ("epoch", "train_loss", "valid_elbo", "beta", "seconds")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """Per-epoch records: ``train_loss`` (the objective per data point, -ELBO at beta=1),
    ``valid_elbo`` (nats per data point, NaN without validation data), ``beta`` and
    ``seconds`` (training time of the epoch)."""

    records: list[dict[str, float]] = field(default_factory=list)
    likelihood: str = ""
    best_epoch: int | None = None
    stopped_early: bool = False

    def __getitem__(self, column: str) -> list[float]:
        if column not in HISTORY_COLUMNS:
            raise KeyError(f"no column {column!r}; columns are {HISTORY_COLUMNS}")
        return [r[column] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def to_csv(self, path: str | Path) -> None:
        with Path(path).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(self.records)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _state_copy(vae: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def fit(
    vae: VAE,
    train: Any,
    valid: Any = None,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    loss: str = "elbo",
    num_particles: int = 1,
    beta: float | dict | BetaSchedule = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    num_threads: int | None = None,
) -> History:
    """Train ``vae`` by stochastic variational inference.

    Args:
        vae: the model; a VAE with ``likelihood="auto"`` chooses it here from ``train``.
        train, valid: tensors, numpy arrays, torch ``Dataset`` s or ``DataLoader`` s
            (batches may be ``x`` or ``(x, label)``).
        epochs, batch_size, lr: the Adam schedule.
        loss: ``"elbo"``, ``"elbo_analytic"`` or ``"iwae"`` (see :mod:`pyro_vae.objectives`).
        num_particles: samples of ``z`` per data point and step.
        beta: KL weight, a number or a :class:`~pyro_vae.objectives.BetaSchedule` (or its
            dict) for a linear warm-up; applied with ``poutine.scale`` on the latent site.
        seed: makes training reproducible (same seed, same device: same weights).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        patience: stop after this many epochs without a better validation ELBO and keep
            the best weights (needs ``valid``).
        checkpoint_dir: after every epoch, the model (best weights so far when ``valid`` is
            given) and the optimizer state are written there atomically.
        num_threads: torch CPU threads (default: one per available core).

    Returns:
        the :class:`History`. If the loss becomes NaN or infinite, training stops with
        :class:`TrainingDiverged`; the VAE is restored to the last good weights and the
        checkpoint files are left as they were after the last good epoch.
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if patience is not None:
        _check_positive_int("patience", patience)
        if valid is None:
            raise ValueError("patience (early stopping) needs validation data: pass valid=...")
    schedule = BetaSchedule.create(beta)
    elbo = make_elbo(loss, num_particles)
    device = resolve_device(device)
    set_threads(num_threads)
    seed_everything(seed)

    in_memory = not isinstance(train, (Dataset, DataLoader))
    if in_memory:
        train = as_tensor(train)
        vae.check_data(train, support=False)
    loader = make_loader(train, batch_size, shuffle=True, seed=seed)
    if not vae.is_resolved:
        vae.resolve_likelihood(train if in_memory else (features_of(b) for b in loader))
    if in_memory:
        vae.check_data(train)
    if valid is not None and not isinstance(valid, (Dataset, DataLoader)):
        valid = as_tensor(valid)
        vae.check_data(valid)
    vae.to(device)
    if not vae.fitted:
        first = features_of(next(iter(loader))).to(device, torch.float32)
        vae.prior.initialize(first)

    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    history = History(likelihood=vae.likelihood.name)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    try:
        steps_per_epoch = len(loader)
    except TypeError:  # an iterable-style dataset
        steps_per_epoch = None
    best_value, best_state = -math.inf, None
    last_good = _state_copy(vae)
    stale = 0

    bar = tqdm(total=epochs * steps_per_epoch if steps_per_epoch else None, disable=not progress, unit="step")
    vae.train()
    try:
        with pyro.validation_enabled(False):  # inputs are validated above, once
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                total, count = 0.0, 0
                b = schedule(epoch - 1)
                for step, batch in enumerate(loader):
                    x = features_of(batch).to(device, torch.float32, non_blocking=True)
                    if epoch == 1 and not in_memory:
                        vae.check_data(x)
                    if steps_per_epoch:
                        b = schedule(epoch - 1 + step / steps_per_epoch)
                    loss_value = elbo.differentiable_loss(vae.model, vae.guide, x, b)
                    value = loss_value.item()
                    if not math.isfinite(value):
                        raise _diverged(vae, last_good, history, epoch, step, value, lr, checkpoint_dir)
                    optimizer.zero_grad(set_to_none=True)
                    loss_value.backward()
                    optimizer.step()
                    total += value
                    count += x.shape[0]
                    bar.update(1)
                seconds = time.perf_counter() - start
                valid_elbo = math.nan
                if valid is not None:
                    valid_elbo = validation_elbo(vae, valid, seed=seed)
                    if not math.isfinite(valid_elbo):
                        raise _diverged(vae, last_good, history, epoch, None, valid_elbo, lr, checkpoint_dir)
                record = {
                    "epoch": epoch,
                    "train_loss": total / max(count, 1),
                    "valid_elbo": valid_elbo,
                    "beta": b,
                    "seconds": seconds,
                }
                history.records.append(record)
                last_good = _state_copy(vae)
                improved = valid is not None and valid_elbo > best_value
                if improved:
                    best_value, best_state, stale = valid_elbo, last_good, 0
                    history.best_epoch = epoch
                elif valid is not None:
                    stale += 1
                bar.set_postfix(
                    epoch=epoch,
                    loss=f"{record['train_loss']:.3f}",
                    valid_elbo=f"{valid_elbo:.3f}",
                    beta=f"{b:.2f}",
                )
                if checkpoint_dir is not None:
                    _write_checkpoint(checkpoint_dir, vae, best_state or last_good, optimizer, history)
                if patience is not None and stale >= patience:
                    history.stopped_early = True
                    break
    finally:
        bar.close()
    if best_state is not None:
        vae.load_state_dict(best_state)
    vae.fitted = True
    return history


def _write_checkpoint(directory: Path, vae: VAE, model_state, optimizer, history: History) -> None:
    vae.save(directory, state_dict=model_state)
    state = {
        "epoch": len(history),
        "model": _state_copy(vae),
        "optimizer": optimizer.state_dict(),
        "history": history.records,
        "best_epoch": history.best_epoch,
    }
    atomic_torch_save(state, directory / TRAINING_STATE_FILE)


def _diverged(vae, last_good, history, epoch, step, value, lr, checkpoint_dir) -> TrainingDiverged:
    vae.load_state_dict(last_good)
    where = f"epoch {epoch}, step {step}" if step is not None else f"the validation after epoch {epoch}"
    kept = (
        f" The checkpoint in {checkpoint_dir} is intact (epoch {len(history)})."
        if checkpoint_dir is not None and len(history)
        else ""
    )
    message = (
        f"the loss became {value} at {where}; training stopped and the model was restored to "
        f"the weights after epoch {len(history)}.{kept} Try a smaller learning rate (lr={lr}), a KL "
        f"warm-up, or a likelihood with a larger scale floor (for example min_scale=1e-2)."
    )
    logger.error(message)
    return TrainingDiverged(message, history)
