"""Training: a PyTorch loop over Pyro's ELBO, in one process or several (DDP).

Each step evaluates :class:`~pyro_vae.objectives.ELBOLoss`, which calls
``elbo.differentiable_loss(vae.model, vae.guide, x, beta)``, the surrogate loss Pyro
derives from the model and guide, and steps ``torch.optim.Adam`` (its fused kernel) on the VAE's
parameters. Nothing about the loss is written here. With ``distributed=True`` the loss
module is wrapped in ``DistributedDataParallel`` and every process trains on its shard.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pyro_vae import distributed as dist_utils
from pyro_vae.data import as_tensor, features_of, make_loader
from pyro_vae.distributed import PeerFailure
from pyro_vae.evaluation import validation_elbo
from pyro_vae.io import atomic_torch_save, load_tensors
from pyro_vae.model import VAE, WEIGHTS_FILE
from pyro_vae.objectives import BetaSchedule, ELBOLoss, make_elbo
from pyro_vae.utils import positive_int, resolve_device, set_threads

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
    ``valid_elbo`` (nats per data point, NaN without validation data), ``beta`` (at the
    epoch's last step) and ``seconds`` (training time of the epoch)."""

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


def _state_copy(vae: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """The Adam optimizer ``fit`` steps: torch's fused kernel where the device has one.

    The fused kernel makes the same update (to float32 rounding) in one pass over all the
    parameters instead of a loop of per-tensor operations: about 3x faster per step on CPU
    for the 0.7M parameters of an MNIST VAE (``benchmarks/speed.py``). Devices without it
    get the default implementation.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(params, lr=lr)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of the sampling noise of one process in one epoch.

    Derived, not drawn, so that processes differ, epochs differ, and a resumed run
    draws what an uninterrupted one would have.
    """
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


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
    distributed: bool = False,
    resume: bool = False,
    max_seconds: float | None = None,
    timeout_s: float = dist_utils.DEFAULT_TIMEOUT_S,
) -> History:
    """Train ``vae`` by stochastic variational inference.

    Args:
        vae: the model; a VAE with ``likelihood="auto"`` chooses it here from ``train``.
        train, valid: tensors, numpy arrays, torch ``Dataset`` s or ``DataLoader`` s
            (batches may be ``x`` or ``(x, label)``).
        epochs, batch_size, lr: the Adam schedule; ``epochs`` counts from the start of
            training, also when resuming.
        loss: ``"elbo"``, ``"elbo_analytic"`` or ``"iwae"`` (see :mod:`pyro_vae.objectives`).
        num_particles: samples of ``z`` per data point and step.
        beta: KL weight, a number or a :class:`~pyro_vae.objectives.BetaSchedule` (or its
            dict) for a linear warm-up; applied with ``poutine.scale`` on the latent site.
        seed: makes training reproducible (same seed, same device: same weights).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        patience: stop after this many epochs without a better validation ELBO and keep
            the best weights (needs ``valid``).
        checkpoint_dir: after every epoch, the model (best weights so far when ``valid`` is
            given) and the training state are written there atomically.
        num_threads: torch CPU threads (default: the available cores, shared among the
            processes of this machine).
        distributed: train in every process of a ``torchrun`` launch with
            ``DistributedDataParallel``; ``batch_size`` is per process, process 0 writes
            the checkpoints.
        resume: continue from the training state in ``checkpoint_dir``.
        max_seconds: stop after the epoch in which this much training time has passed.
        timeout_s: how long a process waits for the others before failing.

    Returns:
        the :class:`History`. If the loss becomes NaN or infinite, training stops with
        :class:`TrainingDiverged`; the VAE is restored to the last good weights and the
        checkpoint files are left as they were after the last good epoch.
    """
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if patience is not None:
        positive_int("patience", patience)
        if valid is None:
            raise ValueError("patience (early stopping) needs validation data: pass valid=...")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    schedule = BetaSchedule.create(beta)
    elbo = make_elbo(loss, num_particles)
    ctx = dist_utils.setup(device, timeout_s) if distributed else dist_utils.SINGLE
    device = ctx.device if distributed else resolve_device(device)
    set_threads(num_threads, processes=ctx.local_world_size)
    torch.manual_seed(epoch_seed(seed, ctx.rank, 0))

    in_memory = not isinstance(train, (Dataset, DataLoader))
    if in_memory:
        train = as_tensor(train)
        vae.check_data(train, support=False, finite=False)  # the shape, before choosing a likelihood
    loader = make_loader(train, batch_size, shuffle=True, seed=seed, rank=ctx.rank, world_size=ctx.world_size)
    if not vae.is_resolved:
        vae.resolve_likelihood(train if in_memory else (features_of(b) for b in loader))
    if in_memory:
        vae.check_data(train)
    if valid is not None and not isinstance(valid, (Dataset, DataLoader)):
        valid = as_tensor(valid)
        vae.check_data(valid)
    vae.to(device)
    if not vae.fitted and not resume:
        vae.prior.initialize(features_of(next(iter(loader))).to(device, torch.float32))

    optimizer = make_optimizer(vae.parameters(), lr)
    history = History(likelihood=vae.likelihood.name)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    best_value, best_state, stale, first_epoch = -math.inf, None, 0, 1
    if resume:
        first_epoch, best_value, best_state, stale = _restore(checkpoint_dir, vae, optimizer, history, device)

    objective = ELBOLoss(vae, elbo)
    if ctx.world_size > 1:
        # The prior's parameters get no gradient while beta is 0 (the latent site is masked).
        may_skip_prior = schedule.end == 0 or (schedule.start == 0 and schedule.warmup_epochs > 0)
        objective = DistributedDataParallel(
            objective,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=may_skip_prior,
        )  # broadcasts process 0's weights, so every process starts from the same model
    try:
        steps_per_epoch = len(loader)
    except TypeError:  # an iterable-style dataset
        steps_per_epoch = None
    last_good = _state_copy(vae)
    elapsed = 0.0
    sync = dist_utils.collective if ctx.world_size > 1 else contextlib.nullcontext

    bar = tqdm(
        total=(epochs - first_epoch + 1) * steps_per_epoch if steps_per_epoch else None,
        disable=not progress or not ctx.is_main,
        unit="step",
    )
    vae.train()
    try:
        with pyro.validation_enabled(False):  # inputs are validated above, once
            for epoch in range(first_epoch, epochs + 1):
                start = time.perf_counter()
                if hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)
                torch.manual_seed(epoch_seed(seed, ctx.rank, epoch))
                total, count = 0.0, 0
                b = schedule(epoch - 1)
                for step, batch in enumerate(loader):
                    x = features_of(batch).to(device, torch.float32, non_blocking=True)
                    if epoch == first_epoch and not in_memory:
                        vae.check_data(x)
                    if steps_per_epoch:
                        b = schedule(epoch - 1 + step / steps_per_epoch)
                    with sync():
                        loss_value = objective(x, b)
                    value = loss_value.item()
                    if ctx.world_size > 1:  # every process must take the same decision
                        value = dist_utils.all_reduce_sum([value / ctx.world_size], device)[0]
                    if not math.isfinite(value):
                        raise _diverged(vae, last_good, history, epoch, step, value, lr, checkpoint_dir)
                    optimizer.zero_grad(set_to_none=True)
                    with sync():  # DistributedDataParallel averages the gradients here
                        loss_value.backward()
                    optimizer.step()
                    total += value * x.shape[0]
                    count += x.shape[0]
                    bar.update(1)
                seconds = time.perf_counter() - start
                elapsed += seconds
                total, count = dist_utils.all_reduce_sum([total, count], device)
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
                if valid is not None and valid_elbo > best_value:
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
                if checkpoint_dir is not None and ctx.is_main:
                    _write_checkpoint(
                        checkpoint_dir, vae, best_state or last_good, optimizer, history, best_value, stale
                    )
                if patience is not None and stale >= patience:
                    history.stopped_early = True
                    break
                if max_seconds is not None and elapsed >= max_seconds:
                    logger.info(
                        "stopping after epoch %d: the time budget of %.0f s is spent", epoch, max_seconds
                    )
                    break
    except PeerFailure as e:
        if checkpoint_dir is not None:
            e.args = (
                f"{e} The last checkpoint in {checkpoint_dir} is intact; continue with --resume (fit(..., resume=True)).",
            )
        raise
    finally:
        bar.close()
    if best_state is not None:
        vae.load_state_dict(best_state)
    vae.fitted = True
    return history


def _write_checkpoint(directory: Path, vae: VAE, model_state, optimizer, history, best_value, stale) -> None:
    vae.save(directory, state_dict=model_state)
    state = {
        "epoch": len(history),
        "model": _state_copy(vae),
        "optimizer": optimizer.state_dict(),
        "history": history.records,
        "best_epoch": history.best_epoch,
        "best_value": best_value,
        "stale_epochs": stale,
    }
    atomic_torch_save(state, directory / TRAINING_STATE_FILE)


def _restore(directory: Path, vae: VAE, optimizer, history: History, device) -> tuple[int, float, Any, int]:
    path = directory / TRAINING_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: no {TRAINING_STATE_FILE} in {directory}")
    state = load_tensors(path, what="training state", map_location=device)
    vae.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    history.records = list(state["history"])
    history.best_epoch = state["best_epoch"]
    best_state = None
    if state["best_epoch"] is not None:
        best_state = load_tensors(directory / WEIGHTS_FILE, what="model weights", map_location=device)
    logger.info("resuming after epoch %d from %s", state["epoch"], directory)
    return state["epoch"] + 1, state["best_value"], best_state, state["stale_epochs"]


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
