"""Run configuration: one dataclass per concern, serialisable to JSON.

A run directory's ``config.json`` holds the :class:`RunConfig` under ``"run"``, so
``pyro-vae train --config DIR/config.json`` repeats a run exactly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _from_dict(cls, d: dict[str, Any], where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    return cls(**d)


@dataclass
class ModelConfig:
    latent_dim: int = 8
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    likelihood: str = "auto"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "standard_normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    activation: str = "relu"


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    path: str | None = None
    label_column: str | None = None
    dequantize: bool | None = None
    standardize: bool = False
    seed: int = 0


@dataclass
class TrainConfig:
    epochs: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    loss: str = "elbo"
    num_particles: int = 1
    beta: float = 1.0
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "cpu"
    patience: int | None = 50
    num_threads: int | None = None
    max_minutes: float | None = None
    ddp_timeout_s: float = 120.0


@dataclass
class EvalConfig:
    num_samples: int = 1000
    split: str = "test"
    chunk_size: int | None = None  # None: sized from the model (see evaluation.default_chunk_size)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
        unknown = sorted(set(d) - set(sections))
        if unknown:
            raise ValueError(f"unknown section(s) {unknown} in the run config; allowed: {sorted(sections)}")
        return cls(**{k: _from_dict(c, d.get(k, {}), f"the {k!r} section") for k, c in sections.items()})

    @classmethod
    def from_json(cls, path: str | Path) -> RunConfig:
        """Read a run config, or the ``"run"`` section of a run directory's ``config.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d.get("run", d) if isinstance(d, dict) else d)
