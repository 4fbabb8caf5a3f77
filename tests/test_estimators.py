"""The scikit-learn estimators: scikit-learn's own checks, Pipeline, ColumnTransformer and GridSearchCV."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyro_vae.errors import ConfigError
from pyro_vae.estimators import VAEDensity, VAEImputer
from pyro_vae.infer.training import TrainConfig

pd = pytest.importorskip("pandas")

TINY = dict(epochs=2, hidden=(4,), latent_dim=1, num_samples=4, patience=None, lr_patience=None)

# Checks that cannot apply, each with its reason (scikit-learn reports them as expected failures).
MONTE_CARLO = (
    "score_samples and transform are importance-sampling estimates whose draws are seeded per call, "
    "not per row: a subset or a permutation of the rows gets other draws"
)
EXPECTED = {
    "check_methods_subset_invariance": MONTE_CARLO,
    "check_methods_sample_order_invariance": MONTE_CARLO,
}


def expected_failed_checks(estimator):
    # The imputer passes them: the checks' data have no missing cell, so nothing is drawn.
    return EXPECTED if isinstance(estimator, VAEDensity) else {}


@parametrize_with_checks(
    [VAEDensity(**TINY), VAEImputer(**TINY)], expected_failed_checks=expected_failed_checks
)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def test_parameters_are_the_settings_defined_once():
    """Every training setting is a parameter with TrainConfig's default, and is checked by fit."""
    params = VAEDensity().get_params()
    assert params["epochs"] == TrainConfig().epochs and params["lr"] == TrainConfig().lr
    assert {"latent_dim", "hidden", "likelihood", "prior", "guide", "num_samples"} <= set(params)
    assert "fill" in VAEImputer().get_params() and "fill" not in params
    with pytest.raises(ConfigError, match="train.lr must be a positive number"):
        VAEDensity(lr=-1.0).fit(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(ConfigError, match="imputer.fill must be one of mean, draw"):
        VAEImputer(**TINY, fill="median").fit(np.random.default_rng(0).normal(size=(20, 2))).transform(
            np.zeros((2, 2))
        )
    assert clone(VAEDensity(latent_dim=3)).latent_dim == 3


def table(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    frame = pd.DataFrame(z @ rng.normal(size=(2, 4)) + 0.3 * rng.normal(size=(n, 4)), columns=list("abcd"))
    frame["kind"] = np.where(z[:, 0] > 0, "up", "down")
    return frame


def test_grid_search_over_the_latent_size_on_a_table():
    frame = table()
    search = GridSearchCV(VAEDensity(epochs=15, hidden=(8,), num_samples=20), {"latent_dim": [1, 2]}, cv=2)
    search.fit(frame)
    assert search.best_params_["latent_dim"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.sample(3).columns.tolist() == frame.columns.tolist()


def test_in_a_pipeline_and_a_column_transformer():
    frame = table()
    holes = frame.copy()
    holes.loc[::7, ["a", "kind"]] = np.nan
    numeric = holes[list("abcd")].to_numpy()
    pipeline = make_pipeline(VAEImputer(**TINY), StandardScaler()).fit(numeric)
    out = pipeline.transform(numeric)
    assert out.shape == numeric.shape and not np.isnan(out).any()
    columns = ColumnTransformer([("vae", VAEImputer(**TINY), list("abcd") + ["kind"])])
    completed = columns.set_output(transform="pandas").fit_transform(holes)
    assert not completed.isna().any().any() and set(completed["vae__kind"]) <= {"up", "down"}
