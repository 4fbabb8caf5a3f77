"""Synthetic, conditional and imputed rows: exact against factor analysis, in the table's own types."""

import math

import numpy as np
import pytest
import torch

from pyro_vae import VAE, fit
from pyro_vae.app.cli import main
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.estimators import VAEDensity, VAEImputer
from pyro_vae.infer.synthesis import _checked, conditional_draws

pd = pytest.importorskip("pandas")

SCALES = torch.tensor([3.0, 0.5, 10.0, 1.0], dtype=torch.float64)
CENTERS = torch.tensor([1.0, -2.0, 50.0, 0.0], dtype=torch.float64)
FA = dict(latent_dim=2, hidden=(), likelihood="gaussian_shared", num_samples=4000, patience=None)


def factor_data(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Rows of a 2-factor model in 4 columns, on scales 0.5 to 10."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.0, 0.5, -0.8, 0.3], [0.2, -1.0, 0.6, 0.9]], dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64) @ w + 0.4 * torch.randn(n, 4, generator=g)
    return y * SCALES + CENTERS


def gaussian_of(vae: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and covariance of x under a linear-Gaussian VAE (model units): b and W W^T + diag(s^2)."""
    z = torch.cat([torch.zeros(1, vae.latent_dim), torch.eye(vae.latent_dim)])
    with torch.no_grad():
        d = vae.decode(z).base_dist
    b, w = d.mean[0].double(), (d.mean[1:] - d.mean[0]).double().T
    return b, w @ w.T + torch.diag(d.stddev[0].double() ** 2)


def conditional(mean, cov, given: list[int], value: torch.Tensor):
    """The Gaussian conditional of the other coordinates given ``x[given] = value``."""
    rest = [i for i in range(len(mean)) if i not in given]
    gain = cov[rest][:, given] @ torch.linalg.inv(cov[given][:, given])
    return mean[rest] + gain @ (value - mean[given]), cov[rest][:, rest] - gain @ cov[given][:, rest]


def assert_matches(draws: torch.Tensor, ess: float, mean: torch.Tensor, cov: torch.Tensor) -> None:
    n = min(ess, len(draws))
    sd = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * sd / math.sqrt(n)).all(), (draws.mean(0), mean)
    sample_cov = torch.cov(draws.T)
    assert torch.linalg.norm(sample_cov - cov) / torch.linalg.norm(cov) < 0.12, (sample_cov, cov)


@pytest.fixture(scope="module")
def factor_frame():
    return pd.DataFrame(factor_data().numpy(), columns=list("abcd"))


@pytest.fixture(scope="module")
def factor_density(factor_frame):
    return VAEDensity(**FA, epochs=60).fit(factor_frame)


def test_conditional_rows_match_the_closed_form_gaussian_conditional(factor_density):
    """Factor analysis' joint over x is Gaussian: given a and c in raw units, (b, d) follow its conditional."""
    schema, vae = factor_density.schema_, factor_density.vae_
    mean, cov = gaussian_of(vae)
    std = torch.tensor([c.std for c in schema.columns], dtype=torch.float64)
    center = torch.tensor([c.mean for c in schema.columns], dtype=torch.float64)
    mean, cov = center + std * mean, std[:, None] * cov * std[None, :]  # raw units
    given = {"a": 3.5, "c": 40.0}
    rows, ess = factor_density.sample(3000, given=given, return_ess=True)
    assert (rows["a"] == 3.5).all() and (rows["c"] == 40.0).all()
    want_mean, want_cov = conditional(mean, cov, [0, 2], torch.tensor([3.5, 40.0], dtype=torch.float64))
    assert ess > 500
    assert_matches(torch.tensor(rows[["b", "d"]].to_numpy()), ess, want_mean, want_cov)


@pytest.mark.parametrize("missing", [True, False], ids=["encoder-proposal", "prior-proposal"])
def test_conditional_draws_match_the_closed_form_for_either_proposal(missing):
    """q(z|x_o) proposes for a VAE built for missing cells, the prior for one that is not."""
    y = ((factor_data(400, seed=1) - CENTERS) / SCALES).float()
    vae = VAE(4, 2, hidden=(), likelihood="gaussian_shared", missing=missing)
    fit(vae, y, epochs=40, progress=False, seed=0)
    mean, cov = gaussian_of(vae)
    row = torch.tensor([[0.8, float("nan"), float("nan"), -0.5]])
    draws = conditional_draws(vae, row, 3000, num_samples=8000, seed=1)
    assert draws.values.shape == (3000, 1, 4) and (draws.values[:, 0, [0, 3]] == row[0, [0, 3]]).all()
    want_mean, want_cov = conditional(mean, cov, [0, 3], torch.tensor([0.8, -0.5], dtype=torch.float64))
    assert_matches(draws.values[:, 0, 1:3].double(), float(draws.ess[0]), want_mean, want_cov)


def test_score_samples_is_the_closed_form_density_in_the_data_units(factor_density, factor_frame):
    """log p(x) of raw rows, the standardization's Jacobian included (here -sum log sd = -2.7 nats)."""
    schema, vae = factor_density.schema_, factor_density.vae_
    mean, cov = gaussian_of(vae)
    std = torch.tensor([c.std for c in schema.columns], dtype=torch.float64)
    center = torch.tensor([c.mean for c in schema.columns], dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(center + std * mean, std[:, None] * cov * std[None, :])
    rows = factor_frame.iloc[:40]
    got = factor_density.score_samples(rows)
    want = exact.log_prob(torch.tensor(rows.to_numpy())).numpy()
    np.testing.assert_allclose(got, want, atol=0.03)
    assert factor_density.score(rows) == pytest.approx(got.sum())


# --------------------------------------------------------------------------- the table's own types


def mixed_frame(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return pd.DataFrame(
        {
            "real": 10 + 3 * a,
            "count": rng.poisson(np.exp(0.5 * a + 1)),
            "age": rng.integers(20, 80, n),
            "flag": (a + rng.normal(size=n) > 0).astype(int),
            "color": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "text": rng.choice(["x", "y"], n).astype(object),
            "scale": rng.integers(1, 6, n),
            "yes": rng.random(n) < 0.3,
            "share": rng.beta(2, 3, n),
            "const": 7,
        }
    )


def assert_in_support(frame, train) -> None:
    assert not frame.isna().any().any()
    assert (frame["count"] >= 0).all() and (frame["count"] == frame["count"].round()).all()
    assert (frame["age"] == frame["age"].round()).all()
    assert set(frame["flag"]) <= {0, 1} and set(frame["yes"]) <= {True, False}
    assert set(frame["color"]) <= set(train["color"]) and set(frame["text"]) <= {"x", "y"}
    assert set(frame["scale"]) <= set(train["scale"])
    assert ((frame["share"] >= 0) & (frame["share"] <= 1)).all() and (frame["const"] == 7).all()


@pytest.fixture(scope="module")
def mixed():
    frame = mixed_frame()
    with pytest.warns(UserWarning, match="'const' dropped"):
        density = VAEDensity(latent_dim=2, hidden=(16,), epochs=4, num_samples=50).fit(frame)
    return frame, density


def test_synthetic_rows_have_the_tables_dtypes_and_stay_in_each_columns_support(mixed):
    frame, density = mixed
    rows = density.sample(300, random_state=3)
    assert list(rows.columns) == list(frame.columns) and list(rows.dtypes) == list(frame.dtypes)
    assert_in_support(rows, frame)
    given, ess = density.sample(50, given={"color": "red", "flag": 1}, return_ess=True)
    assert (given["color"] == "red").all() and (given["flag"] == 1).all() and ess > 1
    assert list(given.dtypes) == list(frame.dtypes)


def test_imputed_frames_keep_the_inputs_dtypes_and_observed_cells():
    # integer columns with holes as float64 (pandas' default) and as nullable Int64, a nullable boolean
    holed = {
        "count": "Int64",
        "age": float,
        "flag": "Int64",
        "scale": float,
        "yes": "boolean",
        "text": object,
    }
    frame = mixed_frame(seed=1).astype(holed)
    rng = np.random.default_rng(2)
    holes = frame.mask(rng.random(frame.shape) < 0.15)
    holes["const"] = 7
    holes = holes.astype(frame.dtypes.to_dict())
    with pytest.warns(UserWarning, match="'const' dropped"):
        imputer = VAEImputer(latent_dim=2, hidden=(16,), epochs=4, num_samples=50).fit(holes)
    for completed in [imputer.transform(holes), *imputer.draws(holes, m=2, random_state=1)]:
        assert list(completed.dtypes) == list(holes.dtypes)
        assert_in_support(completed, frame)
        observed = holes.notna()
        for name in holes.columns:
            assert (completed[name][observed[name]] == holes[name][observed[name]]).all()
    drawn = imputer.set_params(fill="draw").transform(holes)
    assert list(drawn.dtypes) == list(holes.dtypes) and not drawn.isna().any().any()


def test_a_categorical_cell_gets_its_most_probable_level_and_an_integer_a_whole_number():
    """The mean rule: binary and categorical cells a level (not a mean code), integers rounded."""
    frame = mixed_frame(seed=3)
    holes = frame.copy().astype({"age": float, "scale": float, "flag": float})
    holes.loc[:40, ["age", "scale", "flag"]] = np.nan
    with pytest.warns(UserWarning):
        imputed = VAEImputer(latent_dim=2, hidden=(16,), epochs=3, num_samples=30).fit_transform(holes)
    assert (imputed["age"] == imputed["age"].round()).all()
    assert set(imputed["scale"]) <= set(range(1, 6)) and set(imputed["flag"]) <= {0.0, 1.0}


def test_a_condition_outside_a_columns_support_is_a_clear_error(mixed):
    _, density = mixed
    cases = [
        ({"colour": "red"}, ConfigError, "did you mean 'color'"),
        ({"color": "purple"}, DataError, "not one of the column's levels: blue, green, red"),
        ({"count": -1}, DataError, r"count=-1 is outside the column's support"),
        ({"flag": 0.5}, DataError, "outside the column's support"),
        ({"scale": 7}, DataError, "not one of its levels"),
        ({"real": "high"}, DataError, "give a number"),
        ({"const": 8}, DataError, "no support: the column held only 7"),
    ]
    for given, error, message in cases:
        with pytest.raises(error, match=message):
            density.sample(5, given=given)


def test_a_row_no_proposal_supports_is_named():
    log_w = torch.tensor([[0.0, -math.inf], [1.0, -math.inf]])
    with pytest.raises(DataError, match="the condition x=1 has no support under the model: none of the 2"):
        _checked(log_w, 0, "the condition x=1")
    with pytest.raises(DataError, match="row 6 has no support"):
        _checked(log_w, 5, "row {row}")


# --------------------------------------------------------------------------- the command line


def test_the_sample_command_writes_rows_given_columns_and_never_overwrites(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = tmp_path / "table.csv"
    lines = ["x,k,species,b"] + [
        f"{10 + 3 * rng.normal():.4f},{rng.poisson(2)},{rng.choice(['ad', 'ch', 'ge'])},{rng.integers(2)}"
        for _ in range(150)
    ]
    table.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    flags = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--eval-samples", "10", "--no-progress"]
    assert main(["train", "--dataset", "csv", "--data-path", str(table), "--out", str(run), *flags]) == 0
    out = tmp_path / "rows.csv"
    given = '{"species": "ch", "x": 12}'
    assert main(["sample", "--run", str(run), "-n", "20", "--given", given, "--out", str(out)]) == 0
    assert "effective sample size" in capsys.readouterr().out
    rows = pd.read_csv(out)
    assert list(rows.columns) == ["x", "k", "species", "b"] and len(rows) == 20
    assert (rows["species"] == "ch").all() and (rows["x"] == 12).all()
    assert rows["k"].dtype.kind == "i" and (rows["k"] >= 0).all() and set(rows["b"]) <= {0, 1}
    before = out.read_bytes()
    assert main(["sample", "--run", str(run), "-n", "5", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert (
        main(
            [
                "sample",
                "--run",
                str(run),
                "-n",
                "5",
                "--given",
                '{"species": "x"}',
                "--out",
                str(tmp_path / "b.csv"),
            ]
        )
        == 2
    )
    assert "not one of the column's levels" in capsys.readouterr().err and not (tmp_path / "b.csv").exists()


def test_an_array_comes_back_an_array_with_each_declared_category_its_own_number():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=150), rng.choice([2.5, 7.0, 11.0], 150), rng.poisson(3, 150)])
    before = x.copy()
    density = VAEDensity(latent_dim=2, hidden=(8,), epochs=3, num_samples=20, categorical=(1,)).fit(x)
    density.score_samples(x)
    np.testing.assert_array_equal(x, before)  # the caller's array is read, never coded in place
    rows = density.sample(200)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float64 and rows.shape == (200, 3)
    assert set(rows[:, 1]) <= {2.5, 7.0, 11.0} and (rows[:, 2] == np.round(rows[:, 2])).all()
    given = density.sample(20, given={"x1": 7.0})
    assert (given[:, 1] == 7.0).all()
    holes = x.copy()
    holes[::5, 1] = np.nan
    filled = VAEImputer(latent_dim=2, hidden=(8,), epochs=3, num_samples=20, categorical=(1,)).fit(holes)
    assert set(filled.transform(holes)[:, 1]) <= {2.5, 7.0, 11.0}


def test_dates_and_durations_come_back_as_dates_and_durations_and_may_be_given():
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2020-01-01")
    frame = pd.DataFrame(
        {
            "when": start + pd.to_timedelta(rng.integers(0, 365, 200), unit="D"),
            "took": pd.to_timedelta(rng.exponential(3, 200), unit="h"),
            "x": rng.normal(size=200),
        }
    )
    with pytest.warns(UserWarning, match="holds dates"):
        density = VAEDensity(latent_dim=2, hidden=(8,), epochs=3, num_samples=20).fit(frame)
    rows = density.sample(100)
    assert list(rows.dtypes) == list(frame.dtypes)
    # read as whole days (an integer column), so whole days again, near the training dates
    assert (rows["when"] == rows["when"].dt.normalize()).all()
    assert rows["when"].between(start - pd.Timedelta(days=3650), start + pd.Timedelta(days=3650)).all()
    given = density.sample(10, given={"when": "2020-06-01"})
    assert (given["when"] == pd.Timestamp("2020-06-01")).all()


def test_a_frame_with_numbered_columns_gets_its_own_column_labels_back():
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)))  # columns 0, 1, 2 (integers)
    rows = VAEDensity(latent_dim=1, hidden=(4,), epochs=2, num_samples=10).fit(frame).sample(5)
    assert list(rows.columns) == [0, 1, 2]
