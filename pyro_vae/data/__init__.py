"""Data: the bundled default, MNIST from local files, arrays and CSV tables.

Every loader returns a :class:`DataSplits` of float32 tensors ``(n, features)`` in the
model's space, with labels where they exist and the :class:`Preprocessing` that maps
raw data to that space (and back), so outputs can be read in data units and densities
reported per raw feature.

MNIST files are read from a directory given as an argument or by the ``PYRO_VAE_DATA``
environment variable; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The in-memory pieces and the CSV reader live in their own modules; their names stay
# importable from here, where they always were.
from pyro_vae.data.arrays import (  # noqa: F401
    DataSplits,
    Preprocessing,
    TensorBatches,
    _check_not_empty,
    _labels,
    _split_indices,
    as_tensor,
    evaluation_data,
    features_of,
    fit_standardization,
    integer_labels,
    iter_batches,
    load_array,
    make_loader,
    make_splits,
)
from pyro_vae.data.reading import _read_numeric_csv, read_csv  # noqa: F401
from pyro_vae.data.tables import load_table, read_table
from pyro_vae.errors import ConfigError, DataError

DATA_ENV = "PYRO_VAE_DATA"
BINARIZED_MNIST_FILE = "binarized_mnist.npz"
MNIST_FILE = "mnist.npz"


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
        raise FileNotFoundError(
            f"data directory {chosen} does not exist: pass the folder holding {BINARIZED_MNIST_FILE} "
            f"and {MNIST_FILE} as --data-dir (data_dir), or set {DATA_ENV} to it"
        )
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
    categorical: Sequence[str] = (),
    text_cells: str = "error",
    encoding: str | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a dataset by name (the command line's ``--dataset``).

    ``csv`` is a raw table (:func:`pyro_vae.data.tables.load_table`): each column's kind,
    preprocessing and likelihood are chosen from the training split; its real columns are
    standardized unless ``standardize=False``. ``column_likelihoods`` overrides the choice
    per column (tables only); ``categorical``, ``text_cells`` and ``encoding`` are
    :func:`pyro_vae.data.reading.read_table`'s. For the other data sets ``standardize`` defaults to off.
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
        table = read_table(
            path, label_column, categorical=categorical, text_cells=text_cells, encoding=encoding
        )
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
            x, y = _load_npy(path), None
        if dequantize and x.size:
            levels = int(x.max()) + 1
        return load_array(
            x, y, name=Path(path).stem, dequantize_levels=levels, standardize=bool(standardize), seed=seed
        )
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _load_npy(path: str | Path) -> np.ndarray:
    """The array in a ``.npy`` file; one that is not a numeric ``.npy`` is a :class:`DataError`
    naming the file."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"no .npy file at {path}: it {state}; check --data-path (data.path)")
    try:
        arr = np.load(path, allow_pickle=False)  # plain arrays only: never unpickle files
    except (ValueError, EOFError, OSError):  # numpy's errors for a pickle, an object array, a cut file
        # numpy's own words suggest unpickling the file: not repeated to the user
        raise DataError(
            f"{path} cannot be read as a .npy array of numbers (it is not in numpy's .npy format, holds "
            "Python objects, or is cut short); save a numeric array with numpy.save"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        names = ", ".join(arr.files)
        arr.close()
        raise DataError(
            f"{path} is an .npz archive ({names}), not one array: save the array to train on with "
            "numpy.save (an .npy file)"
        )
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{path} holds an array of dtype {arr.dtype}, not real numbers; save a numeric (float or "
            "integer) array with numpy.save"
        )
    if arr.ndim > 4:
        raise DataError(
            f"{path} holds an array of shape {arr.shape}: expected (n, features), (n, H, W) or "
            "(n, C, H, W); reshape it and save it again"
        )
    if len(arr) == 0:
        raise DataError(f"{path} holds no data points (shape {arr.shape}); save an array with rows")
    if arr.ndim < 2:
        raise DataError(
            f"{path} holds an array of shape {arr.shape}: expected (n, features), (n, H, W) or "
            "(n, C, H, W); reshape it (one feature per point: x.reshape(-1, 1)) and save it again"
        )
    return arr


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
