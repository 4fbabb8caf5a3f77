"""scikit-learn estimators of a table: a density (:class:`VAEDensity`) and an imputer (:class:`VAEImputer`).

Both take a pandas ``DataFrame`` (text, category and boolean columns become categories) or a
numeric array ``(n, D)`` with NaN for missing cells, and give back the type they were given:
rows in the table's own units and types by the one rule of :mod:`pyro_vae.infer.synthesis`. Their
parameters are the model settings (:class:`pyro_vae.description.ModelConfig`), the training
settings (:class:`pyro_vae.infer.training.TrainConfig`) and those of :class:`TableConfig`, each
defined once there, so ``get_params``, ``set_params``, ``clone``, ``Pipeline`` and
``GridSearchCV`` see every one::

    from pyro_vae.estimators import VAEDensity, VAEImputer
    density = VAEDensity(latent_dim=4, epochs=200).fit(frame)
    density.score_samples(frame)           # log p(x) per row, in the columns' own units
    density.sample(100, given={"sex": "female"})
    VAEImputer(epochs=200).fit_transform(frame_with_nan)

``fit`` holds ``validation_fraction`` of the rows out for early stopping (``patience``) and
trains on the rest; the column kinds come from the training rows
(:func:`pyro_vae.data.tables.infer_schema`) and the VAE from :func:`pyro_vae.description.resolve`. Every VAE is built with ``missing=True`` (MIWAE), so
that it encodes partly observed rows: imputation and conditional sampling propose ``z`` from
:math:`q(z \\mid x_o)`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from pyro_vae.data import DataSplits
from pyro_vae.data.tables import as_raw_table, infer_schema
from pyro_vae.description import ModelConfig, build, resolve
from pyro_vae.errors import ConfigTypeError, DataError
from pyro_vae.infer.evaluation import evaluate
from pyro_vae.infer.objectives import BetaSchedule
from pyro_vae.infer.synthesis import (
    FILLS,
    TableTypes,
    conditional_draws,
    conditional_point,
    rows_to_table,
    sample_model_rows,
    table_values,
)
from pyro_vae.infer.training import TrainConfig, fit
from pyro_vae.settings import Settings, at_least, setting

MIN_ROWS = 3  # one validation row and two to learn from


def _fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "must be between 0 and 1 (exclusive)"


@dataclass
class TableConfig(Settings):
    """The estimators' own settings (the model's and training's are ModelConfig's and TrainConfig's)."""

    SECTION = "estimator"

    num_samples: int = setting(
        1000,
        "importance samples of z per row for score_samples, transform and conditional sampling",
        check=at_least(1),
    )
    validation_fraction: float = setting(
        0.1, "rows held out of fit for early stopping and the learning-rate schedule", check=_fraction
    )
    categorical: list[str | int] | None = setting(
        None, "names (frames) or indices (arrays) of number-coded columns to treat as categories"
    )
    standardize: bool = setting(True, "standardize real columns with the training rows' mean and sd")


@dataclass
class ImputeConfig(Settings):
    """How :class:`VAEImputer` fills a cell (the rule is :mod:`pyro_vae.infer.synthesis`'s)."""

    SECTION = "imputer"

    fill: str = setting(
        "mean",
        "mean: conditional means of numeric columns, most probable levels of the others; draw: one draw",
        choices=FILLS,
    )


# Settings that do not apply to an estimator fitted in one process.
SKIPPED = frozenset({"ddp_timeout_s"})


def _defaults(classes: tuple[type[Settings], ...]) -> dict[str, Any]:
    """Each setting's default as scikit-learn wants it (immutable): dicts as None, lists as tuples."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in SKIPPED:
                continue
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(value, dict):
                value = None
            elif isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, BetaSchedule):
                value = value.end  # the default is a constant weight
            out[f.name] = value
    return out


def _init_for(*classes: type[Settings]):
    """An ``__init__`` taking every field of ``classes`` as a keyword, with the signature scikit-learn reads."""
    defaults = _defaults(classes)

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigTypeError(
                f"{type(self).__name__} got unknown parameter(s) {unknown}; its parameters: {', '.join(defaults)}"
            )
        for name, default in defaults.items():  # stored as given: checked by fit, as scikit-learn asks
            setattr(self, name, params.get(name, default))

    kind = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, kind, default=value) for name, value in defaults.items()]
    )
    return __init__


def _config(cls: type[Settings], estimator: Any) -> Any:
    """``cls`` from the estimator's parameters (None for a dict setting is ``{}``), every value checked."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in SKIPPED:
            continue
        value = getattr(estimator, f.name)
        if value is None and f.default is dataclasses.MISSING and isinstance(f.default_factory(), dict):
            value = {}
        values[f.name] = list(value) if isinstance(value, tuple) else value
    return cls(**values)


class _TableEstimator(BaseEstimator):
    """What both estimators share: reading the table, fitting the VAE, mapping rows back."""

    _settings: ClassVar[tuple[type[Settings], ...]] = (ModelConfig, TrainConfig, TableConfig)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are the model's to handle
        return tags

    # ------------------------------------------------------------------ reading

    def _table(self, X: Any, reset: bool) -> Any:
        """``X`` checked: a DataFrame as it is (names recorded), anything else a float64 array."""
        if hasattr(X, "columns") and hasattr(X, "dtypes"):
            validate_data(self, X, skip_check_array=True, reset=reset)
            names = [str(c) for c in X.columns]
            if len(set(names)) != len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                raise DataError(
                    f"the table has duplicate column names {twice}: give each column its own name"
                )
            return X
        return validate_data(
            self,
            X,
            reset=reset,
            dtype=np.float64,
            ensure_all_finite="allow-nan",
            ensure_min_samples=1,
        )

    def _model_rows(self, X: Any) -> tuple[Any, torch.Tensor]:
        """The checked table and its rows in model space (NaN missing), coded as fit saw them."""
        check_is_fitted(self, "vae_")
        table = self._table(X, reset=False)
        if not self.types_.is_frame and hasattr(table, "columns"):
            table = table.to_numpy(dtype=np.float64, na_value=np.nan)
        elif self.types_.is_frame and not hasattr(table, "columns"):
            import pandas as pd  # only a frame-fitted estimator given an array gets here

            table = pd.DataFrame(table, columns=self.types_.names)
        raw = table_values(table, self.schema_, self.types_, self._categorical())
        return table, self.schema_.transform(raw)

    def _categorical(self) -> tuple:
        return tuple(self.categorical or ())

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any = None) -> _TableEstimator:
        """Fit the VAE to the table ``X`` (``y`` is ignored).

        Args:
            X: a pandas ``DataFrame`` or a numeric array ``(n, D)``; NaN cells are missing.
            y: ignored (scikit-learn's convention).

        Returns:
            the fitted estimator.
        """
        model, train, table_cfg = (_config(cls, self) for cls in self._settings[:3])
        table = self._table(X, reset=True)
        raw = as_raw_table(table, categorical=table_cfg.categorical or ())
        n = len(raw.values)
        if n < MIN_ROWS:
            raise DataError(f"fitting a VAE needs at least {MIN_ROWS} rows; got {n} sample{'s' * (n != 1)}")
        if np.isinf(raw.values).any():
            raise DataError(
                f"the table holds {int(np.isinf(raw.values).sum())} infinite values; NaN marks a missing cell"
            )
        perm = np.random.default_rng(train.seed).permutation(n)
        n_valid = max(1, int(round(table_cfg.validation_fraction * n)))
        valid, rows = perm[:n_valid], perm[n_valid:]
        schema = infer_schema(
            raw.values[rows], raw.names, raw.levels, table_cfg.standardize, support=raw.values
        )
        x = schema.transform(raw.values)
        splits = DataSplits(
            "table",
            x[rows],
            x[valid],
            x[valid],
            preprocessing=schema.preprocessing(),
            feature_names=schema.names,
            columns=schema,
        )
        with torch.random.fork_rng(devices=[]):  # fit initialises every weight from its seed
            vae = build(dataclasses.replace(resolve(model, splits), missing=True))
        self.history_ = fit(vae, splits, config=train, progress=False)
        self.vae_, self.schema_ = vae.eval(), schema
        self.types_ = TableTypes.of(table, raw, schema)
        return self

    # ------------------------------------------------------------------ synthetic rows

    def sample(
        self,
        n_samples: int = 1,
        random_state: int | None = None,
        *,
        given: Mapping[str, Any] | None = None,
        return_ess: bool = False,
    ) -> Any:
        """``n_samples`` synthetic rows like the fitted table (a DataFrame of its dtypes, or an array).

        Args:
            n_samples: rows to draw.
            random_state: seeds the draws (default: the ``seed`` parameter).
            given: ``{column: value}`` in the table's own units: the rows are then drawn from
                p(other columns | given) by importance resampling with ``num_samples``
                proposals; a value outside its column's support, or a condition the model gives
                no density, is a :class:`~pyro_vae.errors.DataError`.
            return_ess: also return the effective sample size of the proposals (None without ``given``).

        Returns:
            the rows, or ``(rows, ess)`` with ``return_ess``.
        """
        check_is_fitted(self, "vae_")
        seed = self.seed if random_state is None else int(random_state)
        sampled = sample_model_rows(
            self.vae_,
            self.schema_,
            self.types_,
            n_samples,
            given=given,
            num_samples=self.num_samples,
            seed=seed,
        )
        rows, ess = rows_to_table(sampled.rows, self.schema_, self.types_, sampled.fixed), sampled.ess
        return (rows, ess) if return_ess else rows


class VAEDensity(_TableEstimator):
    """A VAE as a scikit-learn density estimator of a table (as ``KernelDensity`` is one).

    ``score_samples`` gives each row's importance-sampled log p(x) with ``num_samples`` draws,
    in the columns' own units: the Jacobian of the standardization is included, so it
    compares with any density fitted to the raw table; a row with missing cells is scored on
    its observed ones, and a column constant in training is not scored. ``score`` is the sum
    over rows, what ``GridSearchCV`` maximises; ``sample`` draws rows.
    """

    __init__ = _init_for(ModelConfig, TrainConfig, TableConfig)

    def score_samples(self, X: Any) -> np.ndarray:
        """log p(x) of each row of ``X`` in the table's own units, ``(n,)``.

        Args:
            X: rows like the fitted table.

        Returns:
            a float64 array of log densities (log probabilities for discrete columns).
        """
        _, x = self._model_rows(X)
        jacobian = self.schema_.preprocessing().log_abs_det_jacobian_per_feature(x.shape[1])
        result = evaluate(
            self.vae_,
            x,
            self.num_samples,
            seed=self.seed,
            log_abs_det_jacobian=jacobian,
            kl_per_dim=False,
            distributed=False,
        )
        return result["pointwise"]["log_likelihood_data_units"].double().cpu().numpy()

    def score(self, X: Any, y: Any = None) -> float:
        """The total log-likelihood of ``X`` (``y`` ignored), in the table's own units."""
        return float(self.score_samples(X).sum())


class VAEImputer(OneToOneFeatureMixin, TransformerMixin, _TableEstimator):
    """A VAE as a scikit-learn imputer: ``transform`` fills each NaN cell, observed cells unchanged.

    ``fill="mean"`` writes conditional means (numeric columns) and most probable levels
    (binary, categorical); ``fill="draw"`` one draw from p(missing | observed); :meth:`draws`
    gives ``m`` completed tables for multiple imputation. Values come back in the input's
    type and dtypes, by the rule of :mod:`pyro_vae.infer.synthesis`.
    """

    _settings = (ModelConfig, TrainConfig, TableConfig, ImputeConfig)
    __init__ = _init_for(ModelConfig, TrainConfig, TableConfig, ImputeConfig)

    def transform(self, X: Any) -> Any:
        """``X`` with its missing cells filled.

        Args:
            X: rows like the fitted table (a DataFrame or an array), NaN cells missing.

        Returns:
            the completed table, of ``X``'s type and dtypes.
        """
        fill = _config(ImputeConfig, self).fill
        table, x = self._model_rows(X)
        if fill == "mean":
            filled = conditional_point(self.vae_, x, self.schema_, self.num_samples, seed=self.seed)
        else:
            filled = conditional_draws(self.vae_, x, 1, self.num_samples, seed=self.seed).values[0]
        return self._completed(table, filled)

    def draws(self, X: Any, m: int = 5, random_state: int | None = None) -> list[Any]:
        """``m`` completed tables, each cell a draw from p(missing | observed) (multiple imputation).

        Args:
            X: rows like the fitted table.
            m: the number of completed tables.
            random_state: seeds the draws (default: the ``seed`` parameter).

        Returns:
            a list of ``m`` tables of ``X``'s type and dtypes.
        """
        table, x = self._model_rows(X)
        seed = self.seed if random_state is None else int(random_state)
        values = conditional_draws(self.vae_, x, m, self.num_samples, seed=seed).values
        return [self._completed(table, v) for v in values]

    def _completed(self, table: Any, filled: torch.Tensor) -> Any:
        restored = rows_to_table(filled, self.schema_, self.types_)
        if not hasattr(table, "columns"):
            out = np.where(np.isnan(table), restored, table)
            return out.astype(table.dtype if table.dtype.kind == "f" else np.float64)
        out = table.copy()
        for j, name in enumerate(table.columns):
            column = table[name]
            if column.isna().any():
                out[name] = column.where(column.notna(), restored.iloc[:, j]).astype(column.dtype)
        return out


__all__ = ["ImputeConfig", "TableConfig", "VAEDensity", "VAEImputer"]
