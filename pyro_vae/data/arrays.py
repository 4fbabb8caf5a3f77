"""In-memory data: tensors and loaders, preprocessing, and the train/valid/test splits.

Every loader of :mod:`pyro_vae.data` and :func:`pyro_vae.data.tables.load_table` returns a
:class:`DataSplits` of float32 tensors ``(n, features)`` in the model's space, with labels
where they exist and the :class:`Preprocessing` that maps raw data to that space (and back),
so outputs can be read in data units and densities reported per raw feature. This module
imports no other data module (``pyro_vae.data`` and ``pyro_vae.data.tables`` build on it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_vae.errors import ConfigError, DataError, DataTypeError

# --------------------------------------------------------------------------- tensors and loaders


def as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A float tensor from a tensor, numpy array, nested list, ``Dataset`` or ``DataLoader``.

    Finite values too large for ``dtype`` (float64 data beyond float32's range) are a
    :class:`~pyro_vae.errors.DataError`, not a silent ``inf``.
    """
    if isinstance(x, (torch.Tensor, np.ndarray)):
        _check_numeric(x)
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


def _check_numeric(x: torch.Tensor | np.ndarray) -> None:
    """A ``DataTypeError`` for data that are not real numbers: complex values (whose imaginary
    part a float conversion would drop without a word), text or Python objects."""
    complex_ = x.is_complex() if isinstance(x, torch.Tensor) else x.dtype.kind == "c"
    if complex_:
        raise DataTypeError(
            f"the data are complex ({x.dtype}): a VAE models real numbers, and converting would drop "
            "the imaginary part; pass the real part (x.real), the modulus (abs(x)) or both as features"
        )
    if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        what = {"U": "text", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans"}
        raise DataTypeError(
            f"the data hold {what.get(x.dtype.kind, x.dtype.kind)} (numpy dtype {x.dtype}), not numbers: "
            "convert them to numbers first (a table with text columns: pyro_vae.data.read_csv, which "
            "gives each column its kind)"
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
    features keep std 1 rather than 0. In float64: the squares of float32 data near 1e20
    overflow float32, and the std came out inf (every standardized value 0)."""
    x = x.double()
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
    #: For tables: what was chosen for each column and why (:class:`pyro_vae.data.tables.TableSchema`).
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
