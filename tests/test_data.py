"""Data loading and preprocessing: bundled digits, MNIST files, arrays, CSV."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_vae import data
from pyro_vae.errors import DataError


def write_fake_mnist(directory, n_train=30, n_test=8):
    rng = np.random.default_rng(0)
    np.savez(
        directory / data.BINARIZED_MNIST_FILE,
        train=rng.integers(0, 2, (n_train, 784), dtype=np.uint8),
        valid=rng.integers(0, 2, (n_test, 784), dtype=np.uint8),
        test=rng.integers(0, 2, (n_test, 784), dtype=np.uint8),
        train_labels=rng.integers(0, 10, n_train, dtype=np.uint8),
        valid_labels=rng.integers(0, 10, n_test, dtype=np.uint8),
        test_labels=rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    np.savez(
        directory / data.MNIST_FILE,
        x_train=rng.integers(0, 256, (n_train + 10000, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train + 10000, dtype=np.uint8),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test, dtype=np.uint8),
    )


def test_digits_default_and_dequantized():
    plain = data.load_digits()
    assert plain.image_shape == (8, 8) and plain.num_features == 64
    assert len(plain.train) + len(plain.valid) + len(plain.test) == 1797
    assert plain.train.min() >= 0 and plain.train.max() <= 1 and plain.train.dtype == torch.float32
    assert plain.train_labels is not None and set(plain.train_labels.tolist()) == set(range(10))
    deq = data.load_digits(dequantize=True)
    assert deq.train.min() > 0 and deq.train.max() < 1
    # Same split and same grey levels after mapping back.
    torch.testing.assert_close(deq.preprocessing.inverse(deq.test), plain.test * 16)
    assert deq.preprocessing.log_abs_det_jacobian(64) == pytest.approx(-64 * math.log(17))


def test_fresh_dequantization_noise_per_batch():
    splits = data.load_digits(dequantize=True)
    ds = splits.train_dataset(seed=0)
    a, b = ds.__getitems__([0, 1, 2]), ds.__getitems__([0, 1, 2])
    assert not torch.equal(a, b)
    torch.testing.assert_close(splits.preprocessing.inverse(a), splits.preprocessing.inverse(b))
    assert (a > 0).all() and (a < 1).all()


def test_standardize_statistics_inverse_and_jacobian():
    x = np.random.default_rng(1).normal([5.0, -3.0, 100.0], [1.0, 0.1, 20.0], size=(500, 3))
    x[:, 1] = 7.0  # a constant feature keeps std 1 instead of dividing by zero
    splits = data.load_array(x, standardize=True)
    assert splits.train.mean(0).abs().max() < 1e-4
    torch.testing.assert_close(splits.train.std(0)[[0, 2]], torch.ones(2), atol=1e-4, rtol=0)
    pre = splits.preprocessing
    assert pre.std[1] == 1.0
    raw_test = pre.inverse(splits.test)
    assert torch.allclose(raw_test[:, 1], torch.full_like(raw_test[:, 1], 7.0))
    assert pre.log_abs_det_jacobian(3) == pytest.approx(-np.log(pre.std).sum())
    assert data.Preprocessing.from_dict(pre.to_dict()) == pre


def test_fake_mnist_files_by_argument_and_environment(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    binary = data.load_binarized_mnist(tmp_path)
    assert binary.train.shape == (30, 784) and binary.test.shape == (8, 784)
    assert set(binary.train.unique().tolist()) <= {0.0, 1.0} and binary.image_shape == (28, 28)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    grey = data.load_mnist()
    assert grey.train.shape == (30, 784) and grey.valid.shape == (10000, 784)
    assert grey.train.min() > 0 and grey.train.max() < 1
    raw = np.load(tmp_path / data.MNIST_FILE)["x_test"].reshape(8, -1)
    np.testing.assert_array_equal(grey.preprocessing.inverse(grey.test).numpy(), raw)
    plain = data.load_mnist(dequantize=False)
    assert plain.train.max() <= 1 and plain.preprocessing.is_identity
    # images=True: each point a (1, 28, 28) image, the same numbers
    images = data.load_mnist(images=True)
    assert images.train.shape == (30, 1, 28, 28) and images.num_features == 784
    np.testing.assert_array_equal(images.preprocessing.inverse(images.test).reshape(8, -1).numpy(), raw)
    assert data.load_binarized_mnist(tmp_path, images=True).test.shape == (8, 1, 28, 28)


def test_missing_data_directory_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="PYRO_VAE_DATA"):
        data.load_binarized_mnist()
    with pytest.raises(FileNotFoundError, match="binarized_mnist.npz"):
        data.load_binarized_mnist(tmp_path)
    np.savez(tmp_path / data.BINARIZED_MNIST_FILE, train=np.zeros((2, 784)))
    with pytest.raises(ValueError, match="lacks"):
        data.load_binarized_mnist(tmp_path)


def test_real_shared_data(shared_data_dir):
    binary = data.load_binarized_mnist(shared_data_dir)
    assert binary.train.shape == (50000, 784) and binary.valid.shape == (10000, 784)
    assert binary.test.shape == (10000, 784) and binary.test_labels.shape == (10000,)
    grey = data.load_mnist(shared_data_dir, dequantize=False)
    assert grey.train.shape == (50000, 784) and grey.test.shape == (10000, 784)
    # The binarized split follows grayscale MNIST's order: dark and bright pixels agree.
    dark, bright = grey.test[:100] < 0.1, grey.test[:100] > 0.9
    assert binary.test[:100][dark].mean() < 0.1 and binary.test[:100][bright].mean() > 0.9


def test_csv_with_header_and_labels(tmp_path):
    path = tmp_path / "table.csv"
    rows = ["a,b,label,c"] + [f"{i},{-i * 0.5},{i % 2},{i * i}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    x, y, names = data.read_csv(path, "label")
    assert x.shape == (40, 3) and names == ["a", "b", "c"]
    np.testing.assert_array_equal(y, np.arange(40) % 2)
    splits = data.load_csv(path, label_column="label")
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 40
    assert splits.train_labels is not None
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("1,2\n3,4\n5,6\n")
    assert data.read_csv(nohead)[0].shape == (3, 2)


@pytest.mark.parametrize(
    "content, match",
    [("a,b\n1,2\n3\n", "expected 2 columns"), ("a,b\n1,x\n", "non-numeric"), ("", "empty")],
)
def test_bad_csv_files(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        data.read_csv(path)


def test_bad_arrays_and_options():
    with pytest.raises(ValueError, match=r"\(n, features\), \(n, H, W\) or \(n, C, H, W\)"):
        data.load_array(np.zeros((10, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="labels"):
        data.load_array(np.zeros((10, 2)), labels=np.zeros(3))
    with pytest.raises(ValueError, match="integer data"):
        data.load_array(np.full((10, 2), 0.5), dequantize_levels=4)
    with pytest.raises(ValueError, match="NaN"):
        data.load_array(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("cifar")
    with pytest.raises(TypeError, match="cannot use"):
        data.as_tensor("not data")


def test_loaders_serve_batches_from_tensors_datasets_and_loaders():
    x = torch.arange(20.0).reshape(10, 2)
    loader = data.make_loader(x, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [b.shape[0] for b in batches] == [4, 4, 2] and torch.equal(torch.cat(batches), x)
    ds = TensorDataset(x, torch.zeros(10))
    assert torch.equal(torch.cat([data.features_of(b) for b in data.make_loader(ds, 3, shuffle=False)]), x)
    given = DataLoader(ds, batch_size=5)
    assert data.make_loader(given, 3) is given
    assert torch.equal(torch.cat(list(data.iter_batches(given, 2))), x)
    assert torch.equal(data.as_tensor(ds), x)


@pytest.mark.parametrize("label_column", [5, "5", 2, -1, "-1", "label", "x7"])
def test_csv_label_column_out_of_range_or_unknown_names_the_columns(tmp_path, label_column):
    path = tmp_path / "two.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(DataError, match=r"2 columns \(0 'a', 1 'b'\)"):
        data.read_csv(path, label_column)
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match=r"2 columns \(0, 1\)"):
        data.read_csv(nohead, label_column)


def test_csv_label_column_by_number_name_and_last(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,0\n3,4,1\n5,6,1\n")
    for column in (2, "2", "c", np.int64(2)):
        x, y, names = data.read_csv(path, column)
        assert names == ["a", "b"] and y.tolist() == [0, 1, 1] and x.tolist()[0] == [1.0, 2.0]


@pytest.mark.parametrize("bad", ["1.5", "nan", "inf"])
def test_csv_non_integer_numeric_labels_are_refused(tmp_path, bad):
    path = tmp_path / "t.csv"
    path.write_text(f"a,label\n1,0\n2,{bad}\n3,1\n")
    with pytest.raises(DataError, match=rf":3: label '{bad}' \(column 'label'\) is not a whole number"):
        data.read_csv(path, "label")


def test_csv_string_labels_are_coded_in_sorted_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,animal\n1,2,dog\n3,4,cat\n5,6,dog\n7,8,emu\n")
    x, y, names = data.read_csv(path, "animal")
    assert y.tolist() == [1, 0, 1, 2] and names == ["a", "b"] and x.shape == (4, 2)
    # Without a header, a numbered label column may hold names from the first row on.
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("1,cat,2\n3,dog,4\n")
    x, y, names = data.read_csv(nohead, 1)
    assert y.tolist() == [0, 1] and x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    missing = tmp_path / "missing.csv"
    missing.write_text("a,animal\n1,dog\n2,\n")
    with pytest.raises(DataError, match=":3: missing label"):
        data.read_csv(missing, "animal")


def test_array_labels_must_be_integers_or_names():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(DataError, match="label 3 is 1.5"):
        data.load_array(x, labels=[0, 1, 2, 1.5] + [0] * 16)
    splits = data.load_array(x, labels=np.array([2.0, 1.0] * 10))  # integral floats are fine
    assert splits.train_labels.dtype == torch.int64
    names = data.load_array(x, labels=["b", "a"] * 10)
    assert set(names.train_labels.tolist()) == {0, 1}


def test_csv_and_arrays_without_points_or_features(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(DataError, match="no data points"):
        data.read_csv(header_only)
    one_column = tmp_path / "one.csv"
    one_column.write_text("label\n1\n0\n")
    with pytest.raises(DataError, match="no features"):
        data.read_csv(one_column, "label")
    with pytest.raises(DataError, match="no data points"):
        data.load_array(np.zeros((0, 3)))
    with pytest.raises(DataError, match="no features"):
        data.load_array(np.zeros((10, 0)))
    with pytest.raises(DataError, match="no data points"):
        data.make_splits("empty", np.ones((5, 2)), np.ones((5, 2)), np.zeros((0, 2)))


def test_values_beyond_float32_are_reported_as_overflow_not_nan(tmp_path):
    x = np.ones((10, 2))
    x[3, 1] = 1e300
    message = r"values up to 1e\+300 do not fit in float32 \(max 3.4e\+38\); rescale the data"
    with pytest.raises(DataError, match=message):
        data.as_tensor(x)
    with pytest.raises(DataError, match=message):
        data.load_array(x)
    with pytest.raises(DataError, match=message):
        data.as_tensor(torch.from_numpy(x))
    with pytest.raises(DataError, match=r"up to -1e\+300"):
        data.as_tensor([[1.0, -1e300]])
    path = tmp_path / "big.csv"
    path.write_text("a,b\n1,2\n3,1e300\n")
    with pytest.raises(DataError, match=message):
        data.load_csv(path)
    # Infinite and NaN values are still reported as such; large but representable values pass.
    with pytest.raises(DataError, match="infinite"):
        data.load_array(np.where(np.arange(20).reshape(10, 2) == 3, np.inf, 1.0))
    assert data.as_tensor(np.array([[3e38, np.nan]])).isnan().sum() == 1
    assert data.as_tensor(np.array([[1e300]]), torch.float64).item() == 1e300


def test_readme_snippet_scores_dequantized_digits_per_raw_grey_level():
    """README's path: evaluate(vae, splits, split="test") applies the preprocessing's Jacobian itself."""
    from pyro_vae import VAE, evaluate, fit
    from pyro_vae.errors import ConfigError

    splits = data.load_digits(dequantize=True)
    vae = VAE(input_dim=64, latent_dim=4, hidden=(32,), likelihood="auto", prior="vamp")
    fit(vae, splits.train, splits.valid, epochs=2, progress=False, num_threads=1)
    metrics = evaluate(vae, splits, split="test", num_samples=20, kl_per_dim=False)
    jacobian = splits.preprocessing.log_abs_det_jacobian(64)
    assert splits.log_abs_det_jacobian == jacobian == pytest.approx(-64 * math.log(17))
    explicit = evaluate(vae, splits.test, num_samples=20, kl_per_dim=False, log_abs_det_jacobian=jacobian)
    assert metrics["bits_per_dim"] == explicit["bits_per_dim"] > 0
    assert metrics["num_points"] == len(splits.test)
    # The default split is test; a plain tensor is scored as given (no Jacobian), as before.
    assert evaluate(vae, splits, num_samples=20, kl_per_dim=False)["bits_per_dim"] == metrics["bits_per_dim"]
    plain = evaluate(vae, splits.test, num_samples=20, kl_per_dim=False)
    assert plain["log_likelihood"] == metrics["log_likelihood"]
    assert plain["bits_per_dim"] == pytest.approx(metrics["bits_per_dim"] + jacobian / (64 * math.log(2)))
    valid = evaluate(vae, splits, split="valid", num_samples=20, kl_per_dim=False)
    assert valid["num_points"] == len(splits.valid)
    with pytest.raises(ConfigError, match="carries its preprocessing's Jacobian"):
        evaluate(vae, splits, num_samples=20, log_abs_det_jacobian=jacobian)
    with pytest.raises(ConfigError, match="needs a DataSplits"):
        evaluate(vae, splits.test, split="test", num_samples=20)
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate(vae, splits, split="tests", num_samples=20)


def test_image_arrays_stay_images_and_preprocessing_keeps_their_shape():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(20, 1, 6, 6)).astype(float)
    splits = data.load_array(x, dequantize_levels=4, standardize=True)
    assert splits.train.shape[1:] == (1, 6, 6) and splits.image_shape == (1, 6, 6)
    assert splits.num_features == 36
    raw = splits.preprocessing.inverse(splits.train)
    assert raw.shape[1:] == (1, 6, 6) and set(raw.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    grey = data.load_array(rng.random((20, 5, 5)))
    assert grey.train.shape[1:] == (1, 5, 5) and grey.image_shape == (5, 5)
    flat = data.load_digits().as_images()
    assert flat.train.shape[1:] == (1, 8, 8) and flat.num_features == 64
    with pytest.raises(ValueError, match="no images"):
        data.load_array(rng.random((20, 3))).as_images()
    colour = data.tile_images(rng.random((4, 3, 5, 5)), (3, 5, 5), rows=2)
    assert colour.shape == (11, 11, 3)


def test_as_tensor_gives_rows_contiguous_in_memory():
    column_major = torch.from_numpy(np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3)))
    assert not column_major.is_contiguous()
    out = data.as_tensor(column_major)
    assert out.is_contiguous() and torch.equal(out, column_major)


def test_tensor_batches_serve_the_rows_asked_for():
    x = torch.arange(20.0).reshape(10, 2)
    batches = data.TensorBatches(x)
    assert torch.equal(batches.__getitems__([3, 0, 7]), x[[3, 0, 7]])
    assert torch.equal(batches[4], x[4])


def test_standardization_statistics_are_float64_at_extreme_scales():
    # float32 squares of data near 1e20 overflow: the sd was inf and every value became 0
    x = np.random.default_rng(0).normal(1e30, 1e29, (200, 2))
    splits = data.load_array(x, standardize=True)
    np.testing.assert_allclose(splits.preprocessing.std, x[: len(splits.train)].std(0, ddof=1), rtol=0.2)
    assert torch.isfinite(splits.train).all()
    torch.testing.assert_close(splits.train.std(0), torch.ones(2), atol=0.02, rtol=0)
