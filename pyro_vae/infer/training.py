"""Training: a PyTorch loop over Pyro's ELBO, in one process or several (DDP).

Each step evaluates :class:`~pyro_vae.infer.objectives.ELBOLoss`, which calls
``elbo.differentiable_loss(vae.model, vae.guide, x, beta)``, the surrogate loss Pyro
derives from the model and guide, and steps ``torch.optim.Adam`` (its fused kernel) on the
VAE's parameters. Nothing about the loss is written here.

The loop is short; its parts are named: :class:`EarlyStopping`, :class:`DivergenceGuard`,
:class:`Checkpointer` (every random state and the data order, so that a resumed run is the
uninterrupted one to the bit), :class:`Progress`, and the distributed wrapping. Every
setting is a field of :class:`TrainConfig`, defined once; ``fit`` takes them as a config,
as keyword arguments, or both.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import logging
import math
import random
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pyro_vae import description, memory
from pyro_vae.data import DataSplits, TensorBatches, as_tensor, features_of, make_loader
from pyro_vae.errors import CheckpointError, ConfigError, DataError, PyroVAEError, UnknownKeyError
from pyro_vae.infer import distributed as dist_utils
from pyro_vae.infer import objectives
from pyro_vae.infer.distributed import PeerFailure
from pyro_vae.infer.evaluation import validation_bounds
from pyro_vae.infer.objectives import BetaSchedule, ELBOLoss, make_elbo
from pyro_vae.infer.thread_policy import ThreadPolicy, work_per_step
from pyro_vae.io import atomic_torch_save, load_tensors
from pyro_vae.model import VAE, WEIGHTS_FILE
from pyro_vae.settings import Settings, at_least, positive, seed_range, setting
from pyro_vae.utils import resolve_device

logger = logging.getLogger(__name__)

TRAINING_STATE_FILE = "training_state.pt"
HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ("epoch", "train_loss", "valid_elbo", "valid_bound", "lr", "beta", "seconds")
CHECKPOINT_FORMAT = 3
# Draws of z in all for the validation ELBO when valid_samples is not set (see TrainConfig).
BATCH_SIZE = 128
MIN_BATCH_SIZE = 16
VALID_DRAWS = 1_000
MAX_VALID_SAMPLES = 32
# Seconds of training between two checkpoints (see TrainConfig.checkpoint_every_s).
CHECKPOINT_EVERY_S = 30.0
# Early stopping's noise: the latest changes of the validation bound it reads, and how many it needs.
NOISE_WINDOW = 20
MIN_CHANGES = 5
# Defaults chosen by measurement on small tables (README, "Defaults").
LR_PATIENCE = 40
WEIGHT_DECAY = 0.0


def _fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "must be between 0 and 1 (exclusive)"


def _device(value: str) -> str | None:
    if value == "auto":
        return None
    try:
        torch.device(value)
    except RuntimeError:
        return "must be cpu, cuda, cuda:N or auto"
    return None


@dataclass
class TrainConfig(Settings):
    """Every training setting, defined once (``fit``, ``config.json`` and the CLI read it)."""

    SECTION = "train"

    epochs: int = setting(
        1000, "epochs at most, counted from the start (also when resuming)", check=at_least(1)
    )
    batch_size: int | None = setting(
        None,
        f"data points per step (per process under DDP); null: {BATCH_SIZE}, or a tenth of the training "
        f"points when that is smaller (at least {MIN_BATCH_SIZE}), so that a small table gets 10 steps per epoch",
        check=at_least(1),
    )
    lr: float = setting(1e-3, "Adam learning rate", check=positive)
    lr_patience: int | None = setting(
        LR_PATIENCE,
        "learning-rate reduction on plateau: the learning rate is multiplied by lr_factor once the "
        "validation bound has not improved for more than this many epochs (torch's ReduceLROnPlateau; "
        "used when there is validation data; null or 0 on the command line: off)",
        check=at_least(1),
    )
    lr_factor: float = setting(0.5, "learning-rate reduction: the factor", check=_fraction)
    weight_decay: float = setting(
        WEIGHT_DECAY, "decoupled weight decay (AdamW) per step, times the learning rate", check=at_least(0)
    )
    loss: str = setting("elbo", "the objective", choices=objectives.names)
    num_particles: int = setting(1, "samples of z per data point and step", check=at_least(1))
    beta: BetaSchedule = setting(
        BetaSchedule(), "the KL weight: a number, or {end, warmup_epochs, start} for a linear warm-up"
    )
    seed: int = setting(0, "seeds the initial weights, the data order and every draw", check=seed_range)
    device: str = setting("cpu", "cpu, cuda, cuda:N or auto", check=_device)
    patience: int | None = setting(
        50,
        "early stopping: epochs without a better validation bound (the objective's own: the ELBO, or "
        "for iwae the IWAE bound; used when there is validation data; null or 0 on the command line: off)",
        check=at_least(1),
    )
    stop_within_noise: bool = setting(
        False,
        "early stopping counts an epoch as better only when its validation bound beats the last such "
        "gain by more than the bound's own scatter (EarlyStopping.noise), not on any new record: stops a "
        "curve creeping up within its noise sooner, at some cost in quality (docs/speed.md)",
    )
    valid_samples: int | None = setting(
        None,
        "draws of z per validation point for the ELBO that early stopping reads (iwae uses its "
        f"num_particles); null: {VALID_DRAWS} draws in all, 1 to {MAX_VALID_SAMPLES} per point",
        check=at_least(1),
    )
    num_threads: int | None = setting(
        None,
        "torch CPU threads (default: one for a small model, else one per core, fixed for the run so "
        "that the results do not depend on the machine's load; OMP_NUM_THREADS also fixes it)",
        check=at_least(1),
    )
    adaptive_threads: bool = setting(
        False,
        "without num_threads, use the cores other processes leave idle, rechecked as training runs: "
        "faster beside busy processes, but the weights then depend on the load (pyro_vae.infer.thread_policy)",
    )
    compile_step: bool = setting(
        False,
        "run the replayed training step through torch.compile (a C++ compiler on CPU, triton on CUDA): "
        "faster steps once compiled, but compiling takes tens of seconds, once per process and model "
        "shape; where it cannot, the step stays eager and a note says why (docs/speed.md)",
    )
    checkpoint_every_s: float = setting(
        CHECKPOINT_EVERY_S,
        "seconds of training between two checkpoints of the whole training state (one is also "
        "written after the first epoch and when training ends; 0: after every epoch); history.csv "
        "gets a line every epoch",
        check=at_least(0),
        flag="--checkpoint-every",
    )
    max_minutes: float | None = setting(
        None,
        "stop after the epoch at which the run's training time reaches this (a resumed run "
        "counts the epochs trained before it)",
        check=positive,
    )
    ddp_timeout_s: float = setting(
        dist_utils.DEFAULT_TIMEOUT_S,
        "seconds a process waits for the others",
        check=positive,
        flag="--ddp-timeout",
    )


def train_config(config: TrainConfig | dict | None = None, **settings: Any) -> TrainConfig:
    """``config`` (or the defaults) with ``settings`` applied, every value checked."""
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    return config.replace(**settings) if settings else config


class TrainingDiverged(PyroVAEError, RuntimeError):
    """The loss became NaN, infinite, or exploded. ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """Per-epoch records: ``train_loss`` (the objective per data point, -ELBO at beta=1),
    ``valid_elbo`` (the validation ELBO, nats per data point, from ``valid_samples`` draws
    per point; NaN without validation data), ``valid_bound`` (the objective's own bound on
    the same data, which early stopping and the learning-rate reduction read: the ELBO
    again, or for ``loss="iwae"`` the IWAE bound with its K particles), ``lr`` (the
    learning rate of the epoch), ``beta`` (at the epoch's last step) and ``seconds``
    (training time of the epoch). ``notes`` says what
    was chosen for the user (the likelihood ``"auto"`` picked, and why); ``threads`` how
    many torch threads training started with, and why (:mod:`pyro_vae.infer.thread_policy`)."""

    records: list[dict[str, float]] = field(default_factory=list)
    likelihood: str = ""
    best_epoch: int | None = None
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)
    threads: str = ""

    def __getitem__(self, column: str) -> list[float]:
        if column not in HISTORY_COLUMNS:
            raise UnknownKeyError(f"no column {column!r}; columns are {HISTORY_COLUMNS}")
        return [r[column] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def seconds(self) -> float:
        return float(sum(r["seconds"] for r in self.records))

    def to_csv(self, path: str | Path) -> None:
        with Path(path).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(self.records)


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The Adam optimizer ``fit`` steps: torch's fused kernel where the device has one;
    AdamW (decoupled weight decay, Loshchilov & Hutter 2019) when ``weight_decay`` > 0.

    The fused kernel makes the same update (to float32 rounding) in one pass over all the
    parameters instead of a loop of per-tensor operations: about 3x faster per step on CPU
    for the 0.7M parameters of an MNIST VAE (``benchmarks/speed.py``). Devices without it
    get the default implementation.
    """
    params = list(params)
    make, options = torch.optim.Adam, {"lr": lr}
    if weight_decay > 0:
        make, options = torch.optim.AdamW, {"lr": lr, "weight_decay": weight_decay}
    try:
        return make(params, **options, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return make(params, **options)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, has_valid: bool):
    """torch's ``ReduceLROnPlateau`` on the validation bound, or None (no validation data,
    or ``lr_patience`` null)."""
    if not has_valid or cfg.lr_patience is None:
        return None
    # threshold: the validation bound's noise, set before each step (EarlyStopping.noise)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=cfg.lr_factor,
        patience=cfg.lr_patience,
        threshold=0.0,
        threshold_mode="abs",
    )


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of the sampling noise of one process in one epoch.

    Derived, not drawn, so that processes differ, epochs differ, and a resumed run
    draws what an uninterrupted one would have.
    """
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------- the parts


class EarlyStopping:
    """Keeps the weights of the best validation score; says when ``patience`` epochs passed
    without a gain: any new record, or with ``within_noise`` only one larger than the score's
    own noise.

    With ``within_noise`` an epoch that scores above every earlier one is still the best (its
    weights are kept), but it resets the count of stale epochs only when it beats the score
    of the last such gain by more than :meth:`noise`, the score's epoch-to-epoch scatter. A
    curve still rising by much less than its scatter per epoch (each new best a little
    luckier than the last) then stops after ``patience`` epochs instead of running on for
    each new record. That is not the default: such curves were still improving on the
    small tables of ``benchmarks/tables.py`` (stopped 90 to 126 epochs sooner, iris and
    penguins lost 0.06 to 0.26 nats per test row). The learning-rate reduction reads
    :meth:`noise` either way (``fit`` sets the scheduler's threshold to it).

    Args:
        patience: stale epochs after which to stop; None: never stop.
        window: how many of the latest changes of the score :meth:`noise` reads.
        within_noise: count only gains larger than the noise.
    """

    def __init__(self, patience: int | None, window: int = NOISE_WINDOW, within_noise: bool = False) -> None:
        self.patience = patience
        self.window = window
        self.within_noise = within_noise
        self.best_value = -math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.gain_value = -math.inf  # the score of the last gain (larger than the noise, with within_noise)
        self.recent: list[float] = []  # the latest window + 1 scores
        self.stale = 0

    def noise(self) -> float:
        """The standard deviation of the score's scatter about its trend: 1.4826 x the median
        absolute deviation of its latest changes, over sqrt(2) (each change is the difference
        of two scores). The median about the median ignores the trend and a few large jumps;
        0 before :data:`MIN_CHANGES` finite changes are known."""
        changes = np.diff(np.asarray(self.recent, dtype=np.float64))
        changes = changes[np.isfinite(changes)]
        if changes.size < MIN_CHANGES:
            return 0.0
        mad = np.median(np.abs(changes - np.median(changes)))
        return float(1.4826 * mad / math.sqrt(2.0))

    def update(self, epoch: int, value: float, state: dict[str, torch.Tensor]) -> bool:
        """Record epoch ``epoch``'s score; True when training should stop."""
        noise = self.noise() if self.within_noise else 0.0
        self.recent = [*self.recent, value][-(self.window + 1) :]
        if value > self.best_value:
            self.best_value, self.best_epoch, self.best_state = value, epoch, state
        if value > self.gain_value + noise:
            self.gain_value, self.stale = value, 0
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    # what a checkpoint keeps (``best_state`` travels apart, as the kept weights)
    STATE = ("best_value", "best_epoch", "stale", "gain_value", "recent")

    def state_dict(self) -> dict[str, Any]:
        return {name: copy.copy(getattr(self, name)) for name in self.STATE}

    def load_state_dict(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        # a checkpoint from before the noise rule has no gain or recent scores: its best so far
        # is the last gain, and the noise starts afresh
        state = {"gain_value": state["best_value"], "recent": [], **state}
        for name in self.STATE:
            setattr(self, name, copy.copy(state[name]))
        self.best_state = best_state


class DivergenceGuard:
    """Stops training on a non-finite loss, or one that explodes while staying finite.

    A step's loss (nats per data point) counts as exploded when it exceeds the best epoch
    loss so far by ``factor`` times the larger of that loss's size and the number of
    features: healthy training moves the per-point loss by a fraction of that, while a
    learning rate far too large sends it to 1e10 and beyond within a few steps.

    One exploded batch among good ones is an outlier, not a divergence (a Gaussian whose
    scale has shrunk on near-deterministic columns meets a point off them): its step is
    skipped, and only ``strikes`` exploded steps in a row stop training. A non-finite
    loss stops it at once.
    """

    def __init__(self, num_features: int, factor: float = 100.0, strikes: int = 5) -> None:
        self.scale = float(num_features)
        self.factor = factor
        self.reference: float | None = None
        self.strikes = strikes
        self.in_a_row = 0
        self.skipped = 0

    def skip(self, value: float) -> bool:
        """After :meth:`problem` found ``value`` wrong: True to skip the step, False to stop."""
        if not math.isfinite(value) or self.in_a_row + 1 >= self.strikes:
            return False
        self.in_a_row += 1
        self.skipped += 1
        return True

    def limit(self) -> float:
        if self.reference is None:
            return math.inf
        return self.reference + self.factor * max(abs(self.reference), self.scale)

    def problem(self, value: float) -> str | None:
        """What is wrong with a loss value, or None. The first finite value (the initial
        weights' loss) is the reference until an epoch ends lower."""
        if not math.isfinite(value):
            return f"the loss became {value}"
        if self.reference is None:
            self.reference = value
        elif value > self.limit():
            return f"the loss exploded to {value:.4g} nats per point (lowest so far: {self.reference:.4g})"
        return None

    def end_epoch(self, mean_loss: float) -> None:
        if math.isfinite(mean_loss):  # an epoch whose every step was skipped has no mean
            self.reference = min(self.reference, mean_loss)


class Checkpointer:
    """Writes the run's state after the first epoch, then every ``every_s`` seconds and when
    training ends: enough to continue it to the bit from the last one.

    ``model.pt`` holds the weights to use (the best so far with validation data),
    ``training_state.pt`` the current weights, the optimizer, the early-stopping and
    divergence-guard state, every random generator and the history; ``history.csv`` gets
    one line per epoch as it ends. Writing the state after every epoch cost the README's
    main job 7% of its wall time (6.6 ms an epoch beside 45 ms of training, profiled); a
    run killed between two checkpoints loses at most ``every_s`` seconds of training.
    """

    def __init__(self, directory: Path | None, is_main: bool, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.directory = directory
        self.active = directory is not None and is_main
        self.every_s = every_s
        self.config_written = False
        self.epoch = 0  # the epoch the last checkpoint holds
        self.written_at: float | None = None  # when this process wrote it (perf_counter)

    def end_epoch(self, vae: VAE, model_state, current_state, loop: _Loop) -> None:
        """After an epoch: its line in ``history.csv``, and a checkpoint when one is due."""
        if not self.active:
            return
        if self.written_at is None or time.perf_counter() - self.written_at >= self.every_s:
            self.save(vae, model_state, current_state, loop)
        self._append_history(loop.history)  # after the checkpoint: a line there means its epoch is done

    def finish(self, vae: VAE, model_state, current_state, loop: _Loop) -> None:
        """When training has ended: the last epoch's checkpoint, unless it is written already."""
        if self.active and self.epoch != len(loop.history):
            self.save(vae, model_state, current_state, loop)

    def save(self, vae: VAE, model_state, current_state, loop: _Loop) -> None:
        """``model_state``: the weights to keep (best so far); ``current_state``: the epoch's own copy."""
        if not self.active:
            return
        if self.config_written:  # config.json does not change within a fit: the weights alone
            atomic_torch_save(model_state, self.directory / WEIGHTS_FILE)
        else:
            vae.save(self.directory, state_dict=model_state)
            self.config_written = True
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": len(loop.history),
            "model": current_state,
            "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
            "history": loop.history.records,
            "early_stopping": loop.stopping.state_dict(),
            "guard_reference": loop.guard.reference,
            "elapsed": loop.elapsed,
            "rng": _rng_states(),
        }
        atomic_torch_save(state, self.directory / TRAINING_STATE_FILE)
        self.epoch, self.written_at = len(loop.history), time.perf_counter()

    def _append_history(self, history: History) -> None:
        path = self.directory / HISTORY_FILE
        if len(history) == 1 or not path.is_file():
            history.to_csv(path)
            return
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=HISTORY_COLUMNS).writerow(history.records[-1])

    def restore(self, vae: VAE, loop: _Loop, device: torch.device) -> int:
        """Load the state written after the last finished epoch; returns the next epoch."""
        if self.directory is None:
            raise ConfigError("resume=True needs the checkpoint_dir to resume from")
        state = _load(self.directory / TRAINING_STATE_FILE, device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{self.directory / TRAINING_STATE_FILE} was written by an older pyro_vae and cannot be "
                "resumed exactly; start the run again"
            )
        vae.load_state_dict(state["model"])
        loop.optimizer.load_state_dict(state["optimizer"])
        if loop.scheduler is not None and state["scheduler"] is not None:
            loop.scheduler.load_state_dict(state["scheduler"])
        loop.history.records = list(state["history"])
        es = state["early_stopping"]
        best = _load(self.directory / WEIGHTS_FILE, device) if es["best_epoch"] is not None else None
        loop.stopping.load_state_dict(es, best)
        loop.history.best_epoch = es["best_epoch"]
        loop.guard.reference = state["guard_reference"]
        loop.elapsed = state["elapsed"]
        _set_rng_states(state["rng"])
        self.epoch = state["epoch"]
        if self.active:  # history.csv may hold epochs the checkpoint does not: rewrite it
            loop.history.to_csv(self.directory / HISTORY_FILE)
        logger.info("resuming after epoch %d from %s", state["epoch"], self.directory)
        return state["epoch"] + 1


def _load(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"cannot resume: no {path.name} in {path.parent}")
    return load_tensors(path, what="training state", map_location=device, finite=True)


def _rng_states() -> dict[str, Any]:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "gauss": (has_gauss, cached),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], *n["gauss"]))
    random.setstate(ast.literal_eval(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Progress:
    """A tqdm bar over epochs on a terminal; elsewhere (logs, CI) one line for the first
    epoch, then one every ``every_s`` seconds, and one for the last."""

    def __init__(self, enabled: bool, total_epochs: int, first_epoch: int, every_s: float = 30.0) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.every_s = every_s
        self.total_epochs = total_epochs
        self.last_time, self.printed, self.latest = time.perf_counter(), None, None
        self.bar = tqdm(total=total_epochs, initial=first_epoch - 1, unit="epoch", disable=not self.tty)

    def note(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def epoch(self, record: dict[str, float]) -> None:
        if self.tty:
            self.bar.set_postfix(
                loss=f"{record['train_loss']:.3f}",
                valid_elbo=f"{record['valid_elbo']:.3f}",
                beta=f"{record['beta']:.2f}",
            )
            self.bar.update(1)
        elif self.enabled:
            self.latest = record
            if self.printed is None or time.perf_counter() - self.last_time >= self.every_s:
                self.line(record)

    def line(self, record: dict[str, float]) -> None:
        self.last_time, self.printed = time.perf_counter(), record["epoch"]
        text = f"loss {record['train_loss']:.3f}, valid_elbo {record['valid_elbo']:.3f}"
        print(f"epoch {record['epoch']}/{self.total_epochs}: {text}", file=sys.stderr, flush=True)

    def close(self, epochs_done: int) -> None:
        if self.tty and self.bar.n < self.bar.total:  # early stop: end the bar at 100%
            self.bar.total = epochs_done
            self.bar.refresh()
        self.bar.close()
        if self.latest is not None and self.printed != self.latest["epoch"]:
            self.line(self.latest)


# --------------------------------------------------------------------------- the loop


@dataclass
class _Loop:
    vae: VAE
    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    valid: Any
    criterion: objectives.Objective
    scheduler: Any
    cfg: TrainConfig
    ctx: dist_utils.Context
    device: torch.device
    history: History
    stopping: EarlyStopping
    guard: DivergenceGuard
    checkpointer: Checkpointer
    check_batch: torch.Tensor
    threads: ThreadPolicy
    elapsed: float = 0.0
    last_good: tuple[dict[str, torch.Tensor], int] = field(default_factory=lambda: ({}, 0))

    def run(self, first_epoch: int, progress: Progress) -> None:
        schedule, cfg = self.cfg.beta, self.cfg
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        for epoch in range(first_epoch, cfg.epochs + 1):
            self.threads.start_epoch()
            record = self.train_epoch(epoch, schedule)
            self.threads.end_epoch(record["seconds"])
            stop = self.end_epoch(epoch, record)
            progress.epoch(record)
            if stop:
                self.history.stopped_early = True
                break
            if budget is not None and self.elapsed >= budget:
                logger.info("stopping after epoch %d: the time budget of %.0f s is spent", epoch, budget)
                break
        state = self.last_good[0]
        self.checkpointer.finish(self.vae, self.stopping.best_state or state, state, self)

    def train_epoch(self, epoch: int, schedule: BetaSchedule) -> dict[str, float]:
        start = time.perf_counter()
        _set_epoch(self.loader, epoch)
        torch.manual_seed(epoch_seed(self.cfg.seed, self.ctx.rank, epoch))
        steps = _num_steps(self.loader)
        total, count, b = 0.0, 0, schedule(epoch - 1)
        for step, x in enumerate(self.batches()):
            b = schedule(epoch - 1 + step / steps) if steps else b
            value = self.step(x, b, epoch, step)
            if value is not None:  # a skipped step (an outlier batch) does not count
                total, count = total + value * x.shape[0], count + x.shape[0]
        seconds = time.perf_counter() - start
        self.elapsed += seconds
        total, count = dist_utils.all_reduce_sum([total, count], self.device)
        mean = total / count if count else math.nan
        lr = self.optimizer.param_groups[0]["lr"]
        return {
            "epoch": epoch,
            "train_loss": mean,
            "valid_elbo": math.nan,
            "valid_bound": math.nan,
            "lr": lr,
            "beta": b,
            "seconds": seconds,
        }

    def batches(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            yield features_of(batch).to(self.device, torch.float32, non_blocking=True)

    def step(self, x: torch.Tensor, beta: float, epoch: int, step: int) -> float | None:
        sync = dist_utils.collective if self.ctx.world_size > 1 else contextlib.nullcontext
        with sync():
            loss = self.objective(x, beta)
        value = loss.item()
        if self.ctx.world_size > 1:  # every process must take the same decision
            value = dist_utils.all_reduce_sum([value / self.ctx.world_size], self.device)[0]
        problem = self.guard.problem(value)
        if problem:
            if self.guard.skip(value):
                logger.info("%s at epoch %d, step %d: step skipped", problem, epoch, step)
                return None
            raise self.diverged(f"{problem} at epoch {epoch}, step {step}")
        self.guard.in_a_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        with sync():  # DistributedDataParallel averages the gradients here
            loss.backward()
        self.optimizer.step()
        return value

    def end_epoch(self, epoch: int, record: dict[str, float]) -> bool:
        """Score the epoch's weights, keep the best, write the checkpoint; True to stop early."""
        state = _state_copy(self.vae)
        elbo, score = self.score()
        problem = self.guard.problem(-score) or (
            None if _all_finite(state) else "the weights became non-finite"
        )
        if problem:
            raise self.diverged(f"{problem} after epoch {epoch}")
        self.guard.end_epoch(record["train_loss"])
        stop = False
        if self.valid is not None:
            record["valid_elbo"], record["valid_bound"] = elbo, score
            noise = self.stopping.noise()
            stop = self.stopping.update(epoch, score, state)
            self.history.best_epoch = self.stopping.best_epoch
            if self.scheduler is not None:
                self.scheduler.threshold = noise  # a plateau, too, is gains within the noise
                self.scheduler.step(score)
        self.history.records.append(record)
        self.last_good = (state, epoch)
        self.checkpointer.end_epoch(self.vae, self.stopping.best_state or state, state, self)
        return stop

    def score(self) -> tuple[float, float]:
        """The validation ELBO and the objective's own validation bound (the score); without
        validation data, NaN and the objective on a fixed training batch.

        Either way the epoch's final weights are checked before they count as good.
        """
        if self.valid is not None:
            cfg = self.cfg
            samples = self.criterion.validation_samples(cfg.num_particles, self.valid_samples())
            bounds = validation_bounds(self.vae, self.valid, num_samples=samples, seed=cfg.seed)
            return bounds["elbo"], bounds[self.criterion.bound]
        # The training objective itself (whatever the guide), at beta = 1, in this process alone.
        objective = getattr(self.objective, "module", self.objective)  # unwrapped from DDP
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            return math.nan, -float(objective(self.check_batch, 1.0))

    def valid_samples(self) -> int:
        """``valid_samples``, or enough for ``VALID_DRAWS`` draws over the validation data."""
        if self.cfg.valid_samples is not None:
            return self.cfg.valid_samples
        try:
            points = len(getattr(self.valid, "dataset", self.valid))  # a DataLoader's points, not batches
        except TypeError:  # an iterable-style dataset
            return 1
        return max(1, min(MAX_VALID_SAMPLES, math.ceil(VALID_DRAWS / max(points, 1))))

    def diverged(self, what: str) -> TrainingDiverged:
        best = self.stopping.best_state
        good, epoch = (best, self.stopping.best_epoch) if best is not None else self.last_good
        self.vae.load_state_dict(good)
        if epoch:
            restored = f"the model was restored to the weights after epoch {epoch}"
        else:
            restored = "no epoch ended with usable weights: the model was restored to its initial weights"
        kept = ""
        if self.checkpointer.directory is not None and self.checkpointer.epoch:
            kept = (
                f" The checkpoint in {self.checkpointer.directory} is intact "
                f"(epoch {self.checkpointer.epoch}; continue from it with resume=True)."
            )
        return TrainingDiverged(
            f"{what}; training stopped and {restored}.{kept} {self.advice()}", self.history
        )

    def advice(self) -> str:
        peak = float(self.check_batch.abs().max())
        if peak > 1e6:
            return (
                f"The data reach {peak:.3g} in absolute value: rescale them (standardize=True, "
                "command line --standardize) before looking at the learning rate."
            )
        return (
            f"Try a smaller learning rate (lr={self.cfg.lr}), a KL warm-up, or a likelihood with a "
            "larger scale floor (for example min_scale=1e-2)."
        )


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    for obj in (loader.sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _num_steps(loader: DataLoader) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable-style dataset
        return None


# --------------------------------------------------------------------------- fit


def fit(
    vae: VAE,
    train: Any,
    valid: Any = None,
    config: TrainConfig | dict | None = None,
    *,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    distributed: bool = False,
    resume: bool = False,
    **settings: Any,
) -> History:
    """Train ``vae`` by stochastic variational inference.

    Args:
        vae: the model. An untrained VAE (not fitted, not loaded) is initialised here from
            ``seed``; with ``likelihood="auto"`` the likelihood is chosen from ``train`` first.
        train, valid: tensors, numpy arrays, torch ``Dataset`` s or ``DataLoader`` s
            (batches may be ``x`` or ``(x, label)``); or ``train`` a
            :class:`~pyro_vae.data.DataSplits` (its training set, and its validation set unless
            ``valid`` is given; a table's ``"auto"`` likelihood is then chosen per column as
            ``splits.columns`` says). Training data with NaN cells turn on ``vae.missing``.
        config: a :class:`TrainConfig` (or its dict); keyword ``settings`` override its
            fields: ``epochs``, ``batch_size``, ``lr``, ``loss``, ``num_particles``, ``beta``
            (a number or ``{"end", "warmup_epochs", "start"}``), ``seed``, ``device``,
            ``lr_patience``, ``lr_factor``, ``weight_decay``, ``patience`` and ``valid_samples``
            (the first two and the last two act only with ``valid``), ``num_threads``,
            ``adaptive_threads``, ``checkpoint_every_s``, ``max_minutes``, ``ddp_timeout_s``.
        progress: a progress bar on a terminal, a line every 30 s elsewhere.
        checkpoint_dir: after the first epoch, every ``checkpoint_every_s`` seconds and at
            the end, ``model.pt`` (best weights so far when ``valid`` is given) and
            ``training_state.pt`` are written there; ``history.csv`` after every epoch.
        distributed: train in every process of a ``torchrun`` launch with
            ``DistributedDataParallel``; ``batch_size`` is per process, process 0 writes.
        resume: continue from the training state in ``checkpoint_dir``: the same weights,
            to the bit, as a run that was never interrupted (same machine and threads).

    Returns:
        the :class:`History`. If the loss becomes non-finite or explodes, training stops with
        :class:`TrainingDiverged`; the VAE is restored to the best (or last good) weights and
        the checkpoint files are left as the last checkpoint wrote them.
    """
    for name in ("patience", "lr_patience"):
        if settings.get(name) is not None and valid is None and not isinstance(train, DataSplits):
            raise ConfigError(f"{name} needs validation data: pass valid=...")
    cfg = train_config(config, **settings)
    splits = train if isinstance(train, DataSplits) else None
    if splits is not None:
        valid = splits.valid if valid is None else valid
        train = splits.train_dataset(seed=cfg.seed)
    ctx = dist_utils.setup(cfg.device, cfg.ddp_timeout_s) if distributed else dist_utils.SINGLE
    device = ctx.device if distributed else resolve_device(cfg.device)
    history = History()
    cfg = cfg.replace(batch_size=batch_size_for(cfg, train, ctx.world_size))
    train, valid = _prepare(vae, train, valid, cfg, history, resume=resume, splits=splits)
    memory.check_step(vae, cfg.batch_size, cfg.num_particles, device=device)  # before a step can swap
    threads = ThreadPolicy(
        cfg.num_threads,
        work_per_step(vae, cfg.batch_size) if device.type == "cpu" else None,
        processes=ctx.local_world_size,
        adaptive=cfg.adaptive_threads,
    )
    history.threads = threads.reason
    loader = make_loader(
        train, cfg.batch_size, shuffle=True, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    vae.to(device)
    first = _first_batch(loader).to(device, torch.float32)  # the prior's start and the check batch
    if not vae.fitted and not resume:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(cfg.seed, 0, 0))  # the same start on every process
            vae.prior.initialize(first)
    history.likelihood = vae.likelihood.name
    optimizer = make_optimizer(vae.parameters(), cfg.lr, cfg.weight_decay)
    loop = _Loop(
        vae=vae,
        objective=_objective(vae, cfg, ctx, device),
        optimizer=optimizer,
        loader=loader,
        valid=valid,
        criterion=objectives.create(cfg.loss),
        scheduler=make_scheduler(optimizer, cfg, valid is not None),
        cfg=cfg,
        ctx=ctx,
        device=device,
        history=history,
        stopping=EarlyStopping(
            cfg.patience if valid is not None else None, within_noise=cfg.stop_within_noise
        ),
        guard=DivergenceGuard(vae.input_dim),
        checkpointer=Checkpointer(
            Path(checkpoint_dir) if checkpoint_dir is not None else None, ctx.is_main, cfg.checkpoint_every_s
        ),
        check_batch=first,
        threads=threads,
    )
    _compile_step(loop.objective, cfg, device, history)
    first_epoch = loop.checkpointer.restore(vae, loop, device) if resume else 1
    loop.last_good = (_state_copy(vae), first_epoch - 1)
    bar = Progress(progress and ctx.is_main, cfg.epochs, first_epoch)
    for note in history.notes:
        bar.note(note)
    try:
        with pyro.validation_enabled(False), warnings.catch_warnings():  # inputs were validated once, above
            # The divergence guard reports a NaN loss itself, with what to do about it.
            warnings.filterwarnings("ignore", "Encountered NaN", UserWarning)
            loop.run(first_epoch, bar)
    except PeerFailure as e:
        if checkpoint_dir is not None:
            e.args = (
                f"{e} The last checkpoint in {checkpoint_dir} is intact; continue with resume=True (--resume).",
            )
        raise
    finally:
        bar.close(len(history))
    history.threads = threads.summary()
    if loop.guard.skipped:
        history.notes.append(f"{loop.guard.skipped} step(s) whose batch loss exploded were skipped")
    if loop.stopping.best_state is not None:
        vae.load_state_dict(loop.stopping.best_state)
    vae.fitted = True
    return history


def _prepare(
    vae: VAE,
    train: Any,
    valid: Any,
    cfg: TrainConfig,
    history: History,
    *,
    resume: bool,
    splits: DataSplits | None = None,
):
    """Check the data, complete a VAE made with ``likelihood="auto"`` from them
    (:func:`pyro_vae.description.complete`, which builds it) and initialise it from the seed."""
    in_memory = not isinstance(train, (Dataset, DataLoader))
    if in_memory:
        train = as_tensor(train)
        if train.shape[0] == 0:
            raise DataError("the training data hold no data points; pass data with at least one row")
        vae.check_data(train, support=False, finite=False)  # the shape, before choosing a likelihood
    if not vae.is_resolved:
        if splits is not None or in_memory:
            source = splits if splits is not None else train
        else:  # batches, read only to choose the likelihood
            source = (features_of(b) for b in make_loader(train, cfg.batch_size, shuffle=False))
        has_missing = _has_missing(train, cfg)
        history.notes.extend(description.complete(vae, source, has_missing=has_missing))
    if not vae.fitted and not resume:
        vae.reset_parameters(cfg.seed)
    if in_memory:
        vae.check_data(train)
    else:
        vae.check_data(_first_batch(make_loader(train, cfg.batch_size, shuffle=False)).to(torch.float32))
    if valid is not None and not isinstance(valid, (Dataset, DataLoader)):
        valid = as_tensor(valid)
        if valid.shape[0] == 0:
            raise DataError("the validation data hold no data points; pass valid=None to train without")
        vae.check_data(valid)
    return train, valid


def batch_size_for(cfg: TrainConfig, train: Any, processes: int = 1) -> int:
    """``batch_size``, or the default for ``train``: 128, or a tenth of its points per
    process when that is smaller, at least 16. Small tables train better on more, smaller
    steps per epoch: against batch 128 it ranks higher on the six tables of
    ``benchmarks/results/defaults.json`` (1.1 nats per row on breast cancer)."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    try:
        points = len(getattr(train, "dataset", train)) // max(processes, 1)
    except TypeError:  # an iterable-style dataset: no length
        return BATCH_SIZE
    return int(min(BATCH_SIZE, max(MIN_BATCH_SIZE, points // 10)))


def _has_missing(train: Any, cfg: TrainConfig) -> bool:
    """Whether the training data hold a NaN cell (one pass over a ``Dataset``'s batches)."""
    if isinstance(train, torch.Tensor):
        return bool(torch.isnan(train).any())
    if isinstance(train, TensorBatches):
        return bool(torch.isnan(train.x).any())
    with torch.random.fork_rng(devices=[]):
        loader = make_loader(train, cfg.batch_size, shuffle=False)
        return any(bool(torch.isnan(as_tensor(features_of(b))).any()) for b in loader)


def _first_batch(loader: DataLoader) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):  # peeking must not move the random stream
        batch = next(iter(loader), None)
    if batch is None:
        raise DataError("the training data hold no data points; pass data with at least one row")
    return features_of(batch)


def _compile_step(
    objective: torch.nn.Module, cfg: TrainConfig, device: torch.device, history: History
) -> None:
    """With ``compile_step``, compile the replayed step, or note in one line why it stays eager."""
    if not cfg.compile_step:
        return
    replayed = getattr(getattr(objective, "module", objective), "replayed", None)  # unwrapped from DDP
    problem = (
        "the step is Pyro's ELBO, not the replayed one" if replayed is None else replayed.compile(device)
    )
    if problem is not None:
        history.notes.append(f"compile_step: the training step stays eager: {problem}")


def _objective(vae: VAE, cfg: TrainConfig, ctx: dist_utils.Context, device: torch.device) -> torch.nn.Module:
    objective = ELBOLoss(vae, make_elbo(cfg.loss, cfg.num_particles))
    if ctx.world_size == 1:
        return objective
    schedule = cfg.beta
    # The prior's parameters get no gradient while beta is 0 (the latent site is masked).
    may_skip_prior = schedule.end == 0 or (schedule.start == 0 and schedule.warmup_epochs > 0)
    return DistributedDataParallel(
        objective,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=may_skip_prior,
    )  # broadcasts process 0's weights, so every process starts from the same model


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]
