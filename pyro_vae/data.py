"""Data: the bundled default, MNIST from local files, arrays and CSV tables.

Every loader returns a :class:`DataSplits` of float32 tensors ``(n, features)`` in the
model's space, with labels where they exist and the :class:`Preprocessing` that maps
raw data to that space (and back), so outputs can be read in data units and densities
reported per raw feature.

MNIST files are read from a directory given as an argument or by the ``PYRO_VAE_DATA``
environment variable; nothing is downloaded.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_vae.errors import ConfigError, DataError, DataTypeError

DATA_ENV = "PYRO_VAE_DATA"
BINARIZED_MNIST_FILE = "binarized_mnist.npz"
MNIST_FILE = "mnist.npz"


# --------------------------------------------------------------------------- tensors and loaders


def as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A float tensor from a tensor, numpy array, nested list, ``Dataset`` or ``DataLoader``.

    Finite values too large for ``dtype`` (float64 data beyond float32's range) are a
    :class:`~pyro_vae.errors.DataError`, not a silent ``inf``.
    """
    if isinstance(x, torch.Tensor):
        _check_fits(x, dtype)
        # Rows contiguous: a batch gathers rows, and from a column-major tensor (a transposed
        # one, or torch.tensor of a Fortran-ordered array such as an .npz's) each took 25x longer.
        return x.to(dtype).contiguous()
    if isinstance(x, np.ndarray):
        _check_fits(x, dtype)
        return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
    if isinstance(x, (Dataset, DataLoader)):
        return torch.cat([as_tensor(b, dtype) for b in iter_batches(x, 4096, dtype=None)])
    if isinstance(x, (list, tuple)):
        return as_tensor(np.asarray(x), dtype)
    raise DataTypeError(
        f"cannot use {type(x).__name__} as data: pass a torch.Tensor, a numpy array, "
        "a torch Dataset or a DataLoader"
    )


def _check_fits(x: torch.Tensor | np.ndarray, dtype: torch.dtype) -> None:
    """A ``DataError`` if finite values of ``x`` overflow the floating ``dtype``."""
    if not dtype.is_floating_point:
        return
    limit = torch.finfo(dtype).max
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point() or torch.finfo(x.dtype).max <= limit:
            return
        x = x.detach().cpu().numpy()
    if x.dtype.kind != "f" or np.finfo(x.dtype).max <= limit or x.size == 0:
        return
    flat = x.reshape(-1)
    # fmax/fmin skip NaN; no temporary the size of the data on the common path.
    if max(np.fmax.reduce(flat), -np.fmin.reduce(flat)) <= limit:
        return
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        return
    hi, lo = finite.max(), finite.min()
    top, sign = (hi, "") if hi >= -lo else (-lo, "-")
    if top > limit:
        raise DataError(
            f"values up to {sign}{top:.3g} do not fit in {str(dtype).removeprefix('torch.')} "
            f"(max {limit:.2g}); rescale the data before loading it (divide by a power of ten)"
        )


def features_of(batch: Any) -> torch.Tensor:
    """The data tensor of a batch that may be ``x``, ``(x, label)`` or ``{"x": ...}``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict) and "x" in batch:
        return batch["x"]
    raise DataTypeError(
        f"a batch must be a tensor, a tuple whose first item is the data tensor, or a dict "
        f"with key 'x'; got {type(batch).__name__}"
    )


class TensorBatches(Dataset):
    """A dataset of rows of an in-memory tensor that serves whole batches at once.

    ``DataLoader`` calls ``__getitems__`` with a batch of indices, so a batch is one
    indexing operation instead of ``batch_size`` item fetches and a collate.
    ``transform(batch, generator)`` (for example fresh dequantization noise) is applied per
    batch with a generator that :meth:`set_epoch` reseeds from ``(seed, epoch)``: the noise
    of an epoch does not depend on what came before, so a resumed run draws what an
    uninterrupted one would have.
    """

    def __init__(self, x: torch.Tensor, transform=None, seed: int = 0) -> None:
        self.x = x
        self.transform = transform
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]
        self.generator.manual_seed(int(state))

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        batch = self.x.index_select(0, torch.as_tensor(indices))  # 4x faster than x[indices] at 128 rows
        return self.transform(batch, self.generator) if self.transform is not None else batch


def _keep_batch(batch):
    return batch


def make_loader(
    data: Any,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A ``DataLoader`` over ``data``; a given ``DataLoader`` is returned unchanged.

    Shuffling uses a ``DistributedSampler`` (also for one process): epoch ``e`` visits a
    permutation seeded by ``seed + e`` (call ``loader.sampler.set_epoch(e)``), which makes
    the order reproducible on resume, and makes N processes with batch ``b`` see, step by
    step, the same data as one process with batch ``N * b``.
    """
    if isinstance(data, DataLoader):
        if world_size > 1:
            raise ConfigError(
                "distributed training shards the data itself: pass a tensor, array or Dataset, not a DataLoader"
            )
        return data
    own_batches = not isinstance(data, Dataset) or isinstance(data, TensorBatches)
    dataset = data if isinstance(data, Dataset) else TensorBatches(as_tensor(data))
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=_keep_batch if own_batches else None,
    )


def iter_batches(
    data: Any, batch_size: int, dtype: torch.dtype | None = torch.float32
) -> Iterator[torch.Tensor]:
    """Data tensors of at most ``batch_size`` rows, in order, from any accepted data type.

    ``dtype=None`` keeps the batches' own dtype (only for a ``Dataset`` or ``DataLoader``).
    """
    if isinstance(data, (torch.Tensor, np.ndarray, list, tuple)):
        x = as_tensor(data, dtype or torch.float32)
        yield from x.split(batch_size)
        return
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    for batch in loader:
        x = features_of(batch)
        yield from (x if dtype is None else as_tensor(x, dtype)).split(batch_size)


# --------------------------------------------------------------------------- preprocessing


_OPEN_EPS = 2.0**-24  # the distance from 1 to the largest float32 below it


@dataclass
class Preprocessing:
    r"""Raw data to model space: optional uniform dequantization, then optional standardization.

    ``y = ((x + u) / levels - mean) / std`` with :math:`u \sim U[0, 1)`. The inverse maps
    model outputs back to raw units (rounding down to a level when dequantizing), and
    :meth:`log_abs_det_jacobian` gives :math:`\sum_d \log|\partial y_d / \partial x_d|`, so
    that :math:`\log p(x) = \log p(y) + \text{that}` is a density in raw units (bits per
    dimension of dequantized images are reported this way).
    """

    levels: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"levels must be at least 2, got {self.levels}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std, or neither")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError("std must be positive in every feature")

    @property
    def is_identity(self) -> bool:
        return self.levels is None and self.mean is None

    @property
    def is_stochastic(self) -> bool:
        return self.levels is not None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = x.to(torch.float32)
        if self.levels is not None:
            # Kept strictly inside (0, 1): float32 rounding of (levels - 1 + u) / levels can
            # give exactly 1, and u can be exactly 0; Beta-type likelihoods need the open interval.
            u = torch.rand(y.shape, generator=generator, dtype=torch.float64)
            y = ((y.double() + u) / self.levels).clamp(_OPEN_EPS, 1 - _OPEN_EPS).float()
        if self.mean is not None:
            y = (y - _per_feature(self.mean, y)) / _per_feature(self.std, y)
        return y

    __call__ = forward

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = y.detach().cpu().to(torch.float32)
        if self.mean is not None:
            x = x * _per_feature(self.std, x) + _per_feature(self.mean, x)
        if self.levels is not None:
            x = torch.floor(x * self.levels).clamp(0, self.levels - 1)
        return x

    def log_abs_det_jacobian(self, num_features: int) -> float:
        """Per data point; the map is affine, so it is a constant (the per-feature values' sum)."""
        return float(self.log_abs_det_jacobian_per_feature(num_features).sum())

    def log_abs_det_jacobian_per_feature(self, num_features: int) -> torch.Tensor:
        r""":math:`\log|\partial y_d / \partial x_d|` for each feature: they sum to
        :meth:`log_abs_det_jacobian`; a point with missing cells sums its observed ones."""
        ldj = torch.zeros(num_features, dtype=torch.float64)
        if self.levels is not None:
            ldj -= math.log(self.levels)
        if self.std is not None:
            ldj -= torch.tensor(self.std, dtype=torch.float64).log()
        return ldj

    def to_dict(self) -> dict[str, Any]:
        return {"levels": self.levels, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(**d)


def _per_feature(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Per-feature statistics shaped like one data point of ``like`` (a vector or an image)."""
    return torch.tensor(values).reshape(like.shape[1:])


def fit_standardization(x: torch.Tensor, min_std: float = 1e-8) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of ``x`` (over observed cells: NaN is missing); constant
    features keep std 1 rather than 0."""
    mean = x.nanmean(0)
    observed = (~torch.isnan(x)).sum(0).clamp_min(2)
    std = ((x - mean).nan_to_num().pow(2).sum(0) / (observed - 1)).sqrt()
    std = torch.where(std > min_std, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


# --------------------------------------------------------------------------- splits


@dataclass
class DataSplits:
    """Train, validation and test data in model space, with labels and preprocessing."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    raw_train: torch.Tensor | None = None  # kept when training redraws dequantization noise
    #: The names of the features (a CSV header's, a DataFrame's), used in figures and reports.
    feature_names: list[str] | None = None
    #: For tables: what was chosen for each column and why (:class:`pyro_vae.tables.TableSchema`).
    columns: Any = None

    @property
    def num_features(self) -> int:
        return math.prod(self.train.shape[1:])

    def as_images(self) -> DataSplits:
        """The same splits with each data point an image ``(C, H, W)`` (``(1, H, W)`` for grey
        levels) instead of a vector: for ``VAE(input_dim=(1, 28, 28), network="conv")`` and any
        network of your own that takes images."""
        if self.image_shape is None:
            raise DataError(f"{self.name} holds no images (no image_shape): its rows stay vectors")
        shape = (1, *self.image_shape) if len(self.image_shape) == 2 else tuple(self.image_shape)

        def image(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.reshape(x.shape[0], *shape)

        return dataclasses.replace(
            self,
            train=image(self.train),
            valid=image(self.valid),
            test=image(self.test),
            raw_train=image(self.raw_train),
        )

    @property
    def log_abs_det_jacobian(self) -> float:
        """Per data point, of the preprocessing: add it to log p(model-space x) for raw units."""
        return self.preprocessing.log_abs_det_jacobian(self.num_features)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name not in ("train", "valid", "test"):
            raise ConfigError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name), getattr(self, f"{name}_labels")

    def train_dataset(self, seed: int = 0) -> Dataset:
        """The training set; with dequantization, fresh noise is drawn for every batch."""
        if self.raw_train is None or not self.preprocessing.is_stochastic:
            return TensorBatches(self.train)
        return TensorBatches(self.raw_train, self.preprocessing.forward, seed=seed)

    def summary(self) -> str:
        line = (
            f"{self.name}: {self.num_features} features; train {len(self.train)}, "
            f"valid {len(self.valid)}, test {len(self.test)}"
        )
        missing = [
            (s, int(torch.isnan(x).sum()), int(torch.isnan(x.flatten(1)).any(1).sum()))
            for s, x in (("train", self.train), ("valid", self.valid), ("test", self.test))
        ]
        if any(cells for _, cells, _ in missing):
            line += "; missing (NaN) cells " + ", ".join(f"{s} {c} in {r} rows" for s, c, r in missing)
        return line

    @property
    def has_missing(self) -> bool:
        """Whether any split holds a missing (NaN) cell."""
        return any(bool(torch.isnan(x).any()) for x in (self.train, self.valid, self.test))


def evaluation_data(data: Any, split: str | None, log_abs_det_jacobian: Any) -> tuple[Any, Any]:
    """What ``evaluate`` scores, and the Jacobian ``J`` that puts its density in raw units.

    A :class:`DataSplits` gives its ``split`` (default ``"test"``) and its preprocessing's
    ``J``, so dequantized or standardized data are scored per raw unit without the caller
    passing it (one value per feature, so that points with missing cells count their
    observed cells alone); any other data is used as given, with ``J = log_abs_det_jacobian or 0``.
    """
    if isinstance(data, DataSplits):
        if log_abs_det_jacobian is not None:
            raise ConfigError(
                "a DataSplits carries its preprocessing's Jacobian: drop log_abs_det_jacobian, "
                "or pass the tensor (splits.test) with it"
            )
        return data.split(split or "test")[0], data.preprocessing.log_abs_det_jacobian_per_feature(
            data.num_features
        )
    if split is not None:
        raise ConfigError(f"split={split!r} needs a DataSplits as the data, got {type(data).__name__}")
    if log_abs_det_jacobian is None:
        return data, 0.0
    if isinstance(log_abs_det_jacobian, (int, float)):
        return data, float(log_abs_det_jacobian)
    return data, torch.as_tensor(log_abs_det_jacobian, dtype=torch.float64).reshape(-1)


def integer_labels(y: Any) -> np.ndarray:
    """Labels as int64 class numbers: integers (or integral floats) as they are, names coded 0, 1, ...

    Names (strings) are numbered in sorted order. Fractional or non-finite numbers are a
    :class:`~pyro_vae.errors.DataError`: they are not class numbers, and truncating them
    would silently merge classes.
    """
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise DataError(
                f"labels must be whole class numbers or class names; label {i} is "
                f"{y.reshape(-1)[i].item():g} ({int(bad.sum())} labels are not integers)"
            )
        return y.astype(np.int64)
    if y.dtype.kind in "USO":
        _, codes = np.unique(y.astype(str), return_inverse=True)
        return codes.reshape(y.shape).astype(np.int64)
    raise DataError(f"cannot use labels of dtype {y.dtype}: give integers or strings")


def _labels(y: Any) -> torch.Tensor | None:
    if y is None:
        return None
    if np.asarray(y).dtype.kind in "USO":
        raise DataError("string labels must be coded for all splits at once: use integer_labels first")
    return torch.as_tensor(integer_labels(y))


def make_splits(
    name: str,
    raw_train: Any,
    raw_valid: Any,
    raw_test: Any,
    labels: tuple[Any, Any, Any] = (None, None, None),
    *,
    dequantize_levels: int | None = None,
    standardize: bool = False,
    image_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> DataSplits:
    """Preprocess raw splits; statistics are fitted on the training split only."""
    raw = [as_tensor(r) for r in (raw_train, raw_valid, raw_test)]
    for split_name, r in zip(("train", "valid", "test"), raw):
        if r.dim() != 2:
            raise DataError(
                f"{name} {split_name} split must be 2-D (n, features), got shape {tuple(r.shape)}"
            )
        _check_not_empty(r.shape, f"{name} {split_name} split")
        if torch.isinf(r).any():
            raise DataError(
                f"{name} {split_name} split contains {int(torch.isinf(r).sum())} infinite values; "
                "remove them (NaN marks a missing cell, infinity is an error)"
            )
    empty = torch.isnan(raw[0]).all(0).nonzero().reshape(-1).tolist()
    if empty:
        raise DataError(
            f"{name}: feature(s) {empty[:10]} have no observed values in the train split (all NaN): drop them"
        )
    if dequantize_levels is not None:
        bad = [(r < 0) | (r >= dequantize_levels) | (r != r.round()) for r in raw]
        if any(b.any() for b in bad):
            raise DataError(
                f"dequantization with {dequantize_levels} levels needs integer data in "
                f"[0, {dequantize_levels - 1}]; {name} has other values"
            )
    pre = Preprocessing(levels=dequantize_levels)
    g = torch.Generator().manual_seed(seed)
    if standardize:
        # Standardization statistics of the dequantized training data.
        mean, std = fit_standardization(pre.forward(raw[0], g))
        pre = Preprocessing(levels=dequantize_levels, mean=mean, std=std)
    train, valid, test = (pre.forward(r, g) for r in raw)
    return DataSplits(
        name=name,
        train=train,
        valid=valid,
        test=test,
        train_labels=_labels(labels[0]),
        valid_labels=_labels(labels[1]),
        test_labels=_labels(labels[2]),
        image_shape=image_shape,
        preprocessing=pre,
        raw_train=raw[0] if pre.is_stochastic else None,
    )


def _check_not_empty(shape: Sequence[int], what: str) -> None:
    if shape[0] == 0:
        raise DataError(f"{what} has no data points (shape {tuple(shape)})")
    if shape[1] == 0:
        raise DataError(f"{what} has no features (shape {tuple(shape)})")


def _split_indices(n: int, valid_fraction: float, test_fraction: float, seed: int):
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ConfigError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_valid - n_test < 1:
        raise DataError(f"too few rows ({n}) to split into train, valid and test")
    return perm[n_valid + n_test :], perm[:n_valid], perm[n_valid : n_valid + n_test]


def load_array(
    x: Any,
    labels: Any = None,
    *,
    name: str = "array",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    dequantize_levels: int | None = None,
    standardize: bool = False,
    image_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> DataSplits:
    """Random train/valid/test split of an array ``(n, features)``, or of images ``(n, H, W)``
    or ``(n, C, H, W)``, which stay images (``image_shape`` is then theirs)."""
    x = np.asarray(as_tensor(x))
    images = x.ndim in (3, 4)
    if images:
        image_shape = x.shape[1:]
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise DataError(f"expected an array (n, features), (n, H, W) or (n, C, H, W), got shape {x.shape}")
    _check_not_empty(x.shape, name)
    idx = _split_indices(len(x), valid_fraction, test_fraction, seed)
    y = None if labels is None else integer_labels(labels)
    if y is not None and len(y) != len(x):
        raise DataError(f"{len(y)} labels for {len(x)} rows")
    splits = make_splits(
        name,
        *(x[i] for i in idx),
        labels=tuple(None if y is None else y[i] for i in idx),
        dequantize_levels=dequantize_levels,
        standardize=standardize,
        image_shape=image_shape,
        seed=seed,
    )
    return splits.as_images() if images else splits


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _describe_columns(names: list[str], header: bool) -> str:
    shown = [f"{i} {n!r}" if header else str(i) for i, n in enumerate(names)]
    if len(shown) > 12:
        shown = [*shown[:10], "...", shown[-1]]
    return f"{len(names)} columns ({', '.join(shown)})"


def _label_index(label_column: str | int, names: list[str], header: bool, path: Path) -> int:
    columns = _describe_columns(names, header)
    if isinstance(label_column, str) and label_column.strip() in names:
        return names.index(label_column.strip())
    try:
        if isinstance(label_column, bool):
            raise TypeError
        idx = int(label_column.strip()) if isinstance(label_column, str) else operator.index(label_column)
    except (TypeError, ValueError):
        where = "" if header else " (it has no header row, so columns go by number)"
        raise DataError(f"label column {label_column!r} is not in {path}{where}: it has {columns}") from None
    if not 0 <= idx < len(names):
        raise DataError(f"label column {idx} is out of range: {path} has {columns}, numbered from 0")
    return idx


def read_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a numeric CSV table (optional header row); returns features, labels, column names.

    ``label_column`` is a header name or a column number from 0. Labels must be whole
    numbers (class numbers) or names; names are numbered 0, 1, ... in sorted order.
    """
    from pyro_vae.tables import read_table

    table = read_table(path, label_column)
    if table.levels:
        text = [table.names[j] for j in table.levels]
        raise DataError(
            f"{path}: non-numeric values in column(s) {text}: pyro_vae.tables.read_table and "
            "load_table (and --dataset csv) code them as categories"
        )
    return table.values, table.labels, table.names


def _read_numeric_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The strict reader of whole numbers and decimals (every cell a number)."""
    path = Path(path)
    rows = _csv_rows(path)
    first = rows[0]
    guess = _numbered_column(label_column, len(first))
    has_header = not all(_is_number(c) for i, c in enumerate(first) if i != guess)
    header = [c.strip() for c in first] if has_header else None
    body = rows[1:] if header else rows
    names = header or [f"x{i}" for i in range(len(first))]
    label_idx = None if label_column is None else _label_index(label_column, names, has_header, path)
    if not body:
        raise DataError(f"{path} has no data points (only a header row)")
    if label_idx is not None and len(names) == 1:
        raise DataError(f"{path} has no features: its only column is the label column {names[0]!r}")
    start = 2 if header else 1
    table, label_cells = _csv_body(path, body, len(names), label_idx, start)
    keep = [names[i] for i in range(len(names)) if i != label_idx]
    if label_idx is None:
        return table, None, keep
    label_name = names[label_idx] if header else str(label_idx)
    return table, _csv_labels(path, label_cells, label_name, start), keep


def _csv_rows(path: Path) -> list[list[str]]:
    """The non-blank rows of the CSV file at ``path`` (at least one)."""
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty")
    return rows


def _numbered_column(label_column: str | int | None, num_columns: int) -> int | None:
    """The label column when given by number: it may hold names, even in the first data row."""
    if isinstance(label_column, (int, str)) and not isinstance(label_column, bool):
        text = str(label_column).strip()
        if text.isdigit() and int(text) < num_columns:
            return int(text)
    return None


def _csv_body(
    path: Path, body: list[list[str]], num_columns: int, label_idx: int | None, start: int
) -> tuple[np.ndarray, list[str]]:
    """The feature table and the label cells (stripped) of the data rows, numbered from ``start``."""
    values, label_cells = [], []
    for lineno, row in enumerate(body, start=start):
        if len(row) != num_columns:
            raise DataError(f"{path}:{lineno}: expected {num_columns} columns, found {len(row)}")
        cells = [c for i, c in enumerate(row) if i != label_idx]
        try:
            values.append([float(c) for c in cells])
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric value in {row}") from None
        if label_idx is not None:
            label_cells.append(row[label_idx].strip())
    return np.asarray(values, dtype=np.float64), label_cells


def _csv_labels(path: Path, label_cells: list[str], label_name: str, start: int) -> np.ndarray:
    """Class numbers from whole numbers, or from names numbered in sorted order."""
    if all(_is_number(c) for c in label_cells):
        numbers = np.asarray([float(c) for c in label_cells])
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}:{start + i}: label {label_cells[i]!r} (column {label_name!r}) is not a whole "
                f"number; labels must be class numbers or class names ({int(bad.sum())} are not)"
            )
        return numbers.astype(np.int64)
    if "" in label_cells:
        i = label_cells.index("")
        raise DataError(f"{path}:{start + i}: missing label in column {label_name!r}")
    return integer_labels(np.asarray(label_cells))


def load_csv(path: str | Path, label_column: str | int | None = None, **kwargs: Any) -> DataSplits:
    """A CSV table of numbers, split at random (see :func:`load_array` for the options)."""
    x, y, _ = read_csv(path, label_column)
    return load_array(x, y, name=Path(path).stem, **kwargs)


def load_digits(*, dequantize: bool = False, standardize: bool = False, seed: int = 0) -> DataSplits:
    """The bundled default: scikit-learn's 8x8 digits (1797 images, grey levels 0..16).

    Scaled to [0, 1] by ``x / 16``; ``dequantize=True`` gives ``(x + u) / 17`` instead.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.data.astype(np.float32)
    if not dequantize:
        x = x / 16.0
    return load_array(
        x,
        bunch.target,
        name="digits",
        valid_fraction=0.15,
        test_fraction=0.15,
        dequantize_levels=17 if dequantize else None,
        standardize=standardize,
        image_shape=(8, 8),
        seed=seed,
    )


def data_dir(path: str | Path | None = None) -> Path:
    """The directory holding the MNIST ``.npz`` files: ``path``, else ``$PYRO_VAE_DATA``."""
    chosen = path or os.environ.get(DATA_ENV)
    if not chosen:
        raise FileNotFoundError(
            f"no data directory: pass data_dir (--data-dir) or set {DATA_ENV} to the folder "
            f"holding {BINARIZED_MNIST_FILE} and {MNIST_FILE}"
        )
    chosen = Path(chosen).expanduser()
    if not chosen.is_dir():
        raise FileNotFoundError(f"data directory {chosen} does not exist")
    return chosen


def _open_npz(directory: str | Path | None, filename: str, keys: list[str]):
    path = data_dir(directory) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the data directory must contain {filename}")
    npz = np.load(path, allow_pickle=False)  # plain arrays only: never unpickle files
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise DataError(f"{path} lacks the arrays {missing} (it has {npz.files})")
    return npz


def load_binarized_mnist(
    data_dir: str | Path | None = None, *, seed: int = 0, images: bool = False
) -> DataSplits:
    """Statically binarized MNIST, Larochelle's 50000/10000/10000 split.

    ``images=True``: each point is a ``(1, 28, 28)`` image rather than 784 features.
    """
    keys = ["train", "valid", "test"]
    npz = _open_npz(data_dir, BINARIZED_MNIST_FILE, keys)
    labels = tuple(npz[f"{k}_labels"] if f"{k}_labels" in npz.files else None for k in keys)
    splits = make_splits(
        "binarized_mnist",
        *(npz[k].reshape(len(npz[k]), -1) for k in keys),
        labels=labels,
        image_shape=(28, 28),
        seed=seed,
    )
    return splits.as_images() if images else splits


def load_mnist(
    data_dir: str | Path | None = None,
    *,
    dequantize: bool = True,
    standardize: bool = False,
    seed: int = 0,
    images: bool = False,
) -> DataSplits:
    """Grayscale MNIST: train = first 50000 of the official training set, valid = the next 10000.

    ``dequantize=True`` (default) gives ``(x + u) / 256`` in (0, 1), a proper density
    target; ``False`` gives ``x / 255`` in [0, 1]. ``images=True``: each point is a
    ``(1, 28, 28)`` image rather than 784 features.
    """
    npz = _open_npz(data_dir, MNIST_FILE, ["x_train", "y_train", "x_test", "y_test"])
    x_train = npz["x_train"].reshape(len(npz["x_train"]), -1)
    x_test = npz["x_test"].reshape(len(npz["x_test"]), -1)
    y_train, y_test = npz["y_train"], npz["y_test"]
    if not dequantize:
        x_train, x_test = x_train / 255.0, x_test / 255.0
    n = len(x_train) - 10000
    splits = make_splits(
        "mnist",
        x_train[:n],
        x_train[n:],
        x_test,
        labels=(y_train[:n], y_train[n:], y_test),
        dequantize_levels=256 if dequantize else None,
        standardize=standardize,
        image_shape=(28, 28),
        seed=seed,
    )
    return splits.as_images() if images else splits


DATASETS = ("digits", "binarized_mnist", "mnist", "csv", "npy")


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    label_column: str | int | None = None,
    dequantize: bool | None = None,
    standardize: bool | None = None,
    column_likelihoods: dict | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a dataset by name (the command line's ``--dataset``).

    ``csv`` is a raw table (:func:`pyro_vae.tables.load_table`): each column's kind,
    preprocessing and likelihood are chosen from the training split; its real columns are
    standardized unless ``standardize=False``. ``column_likelihoods`` overrides the choice
    per column (tables only). For the other data sets ``standardize`` defaults to off.
    """
    if column_likelihoods and name != "csv":
        raise ConfigError(f"column likelihoods are for tables (--dataset csv), not {name!r}")
    if name == "digits":
        # Dequantized by default: a density on 17 grey levels is only a likelihood after it.
        return load_digits(
            dequantize=True if dequantize is None else dequantize, standardize=bool(standardize), seed=seed
        )
    if name == "binarized_mnist":
        if dequantize or standardize:
            raise ConfigError("binarized_mnist is binary: dequantize and standardize do not apply")
        return load_binarized_mnist(data_dir, seed=seed)
    if name == "mnist":
        return load_mnist(
            data_dir,
            dequantize=True if dequantize is None else dequantize,
            standardize=bool(standardize),
            seed=seed,
        )
    if name == "csv" and not dequantize:
        if path is None:
            raise ConfigError("dataset 'csv' needs a file path (--data-path)")
        from pyro_vae.tables import load_table, read_table

        table = read_table(path, label_column)
        return load_table(
            table,
            name=Path(path).stem,
            standardize=standardize is not False,
            column_likelihoods=column_likelihoods,
            seed=seed,
        )
    if name in ("csv", "npy"):
        if path is None:
            raise ConfigError(f"dataset {name!r} needs a file path (--data-path)")
        levels = None
        if name == "csv":
            x, y, _ = _read_numeric_csv(path, label_column)
        else:
            x, y = np.load(path, allow_pickle=False), None
        if dequantize and x.size:
            levels = int(x.max()) + 1
        return load_array(
            x, y, name=Path(path).stem, dequantize_levels=levels, standardize=bool(standardize), seed=seed
        )
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def tile_images(images: np.ndarray, shape: Sequence[int], rows: int) -> np.ndarray:
    """Images laid out on a ``rows``-row canvas, one blank pixel between them (for ``imshow``).

    ``shape`` is ``(H, W)`` or ``(C, H, W)``; grey levels (``C = 1``) give a 2-D canvas with
    NaN between the images, colour (``C = 3``) an ``(H', W', 3)`` canvas with white between.
    """
    shape = tuple(shape)
    colour = len(shape) == 3 and shape[0] == 3
    h, w = shape[-2:]
    n = len(images)
    cols = int(np.ceil(n / rows))
    size = (rows * (h + 1) - 1, cols * (w + 1) - 1)
    canvas = np.full((*size, 3), 1.0) if colour else np.full(size, np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        img = np.moveaxis(img.reshape(3, h, w), 0, -1) if colour else img.reshape(h, w)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return canvas
