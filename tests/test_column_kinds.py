"""Column kinds (:mod:`pyro_vae.data.columns`): each registered kind detects itself from a
column's values, and its transform to model units and back is exact.

Adding a kind is one class in :mod:`pyro_vae.data.columns` and one entry in ``EXAMPLES`` here:
every test parametrized over the registry then covers it, and
``test_every_registered_kind_has_an_example`` fails until the entry exists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyro_vae.data import columns
from pyro_vae.data.columns import ColumnKind, ColumnSpec, ColumnStats
from pyro_vae.data.tables import TableSchema, infer_schema
from pyro_vae.errors import ConfigError

RNG = np.random.default_rng(0)

#: one column of each kind: (values, text labels or None)
EXAMPLES = {
    "binary": (RNG.integers(0, 2, 200).astype(float), None),
    "count": (RNG.poisson(3.0, 200).astype(float), None),
    "categorical": (RNG.integers(0, 3, 200).astype(float), ["oslo", "paris", "rome"]),
    "integer": (RNG.integers(18, 90, 200).astype(float), None),
    "unit": (RNG.uniform(0.01, 0.99, 200), None),
    "real": (RNG.normal(50.0, 10.0, 200), None),
    "point_masses": (np.where(RNG.uniform(size=200) < 0.4, 0.0, RNG.lognormal(2.0, 1.0, 200)), None),
}


def stats_of(name: str) -> ColumnStats:
    values, labels = EXAMPLES[name]
    return ColumnStats.of(values, f"a {name} column", labels)


def test_every_registered_kind_has_an_example():
    assert sorted(EXAMPLES) == columns.names()


@pytest.mark.parametrize("name", columns.names())
def test_each_kind_detects_itself_and_its_spec_names_it(name):
    spec = columns.detect(stats_of(name))
    assert spec.kind == name and spec.reason
    assert spec.column_kind is not None and spec.column_kind.name == name


@pytest.mark.parametrize("name", columns.names())
def test_each_kinds_transform_round_trips_and_missing_cells_stay_missing(name):
    values, labels = EXAMPLES[name]
    raw = values.copy()
    raw[3] = np.nan
    spec = columns.detect(ColumnStats.of(raw, "c", labels))
    kind = spec.column_kind
    model = kind.to_model(raw, spec)
    assert np.isnan(model[3]) and np.isfinite(np.delete(model, 3)).all()
    np.testing.assert_allclose(kind.to_raw(model, spec), raw, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", columns.names())
def test_each_kind_snaps_a_noisy_model_value_back_into_its_support(name):
    """What imputed and synthetic rows go through: model units with noise (a mean, a draw),
    snapped, back to raw units and onto the support, land on values the column can take."""
    values, labels = EXAMPLES[name]
    spec = columns.detect(ColumnStats.of(values, "c", labels))
    kind = spec.column_kind
    noisy = kind.to_model(values, spec) + RNG.normal(0, 0.3, values.size)
    snapped = kind.snap(noisy, spec)
    np.testing.assert_array_equal(kind.snap(snapped, spec), snapped)  # idempotent
    raw = kind.to_support(kind.to_raw(snapped, spec), spec)
    assert all(kind.in_support(float(v), spec) for v in raw)
    if kind.num_codes(spec) is not None:
        assert set(np.unique(snapped)) <= set(range(kind.num_codes(spec)))
    assert np.isnan(kind.snap(np.array([np.nan]), spec)).all()


def test_detection_follows_the_priorities():
    ordered = columns.by_priority()
    assert [k.priority for k in ordered] == sorted(k.priority for k in ordered)
    # binary before count before the few-valued categorical before integer
    assert [k.name for k in ordered][:4] == ["binary", "count", "categorical", "integer"]
    # the same few values are categorical from 1, counts from 0
    assert columns.detect(ColumnStats.of(np.tile([1.0, 2, 3, 4], 50), "s")).kind == "categorical"
    assert columns.detect(ColumnStats.of(np.tile([0.0, 1, 2, 3], 50), "s")).kind == "count"


def test_text_labels_are_categorical_even_when_two():
    spec = columns.detect(ColumnStats.of(np.tile([0.0, 1.0], 50), "smoker", ["no", "yes"]))
    assert (spec.kind, spec.levels, spec.mean) == ("categorical", ["no", "yes"], None)


def test_a_new_kind_is_one_class_and_detection_picks_it_by_its_priority():
    @columns.register("negative_test_kind")
    class Negative(ColumnKind):
        priority = 45.0  # after integer, before unit and real

        def detect(self, stats):
            return "all below zero" if stats.support.max() < 0 else None

        def likelihood(self, stats):
            return "gaussian"

    try:
        spec = columns.detect(ColumnStats.of(-RNG.uniform(1, 2, 100), "debt"))
        assert (spec.kind, spec.reason) == ("negative_test_kind", "all below zero")
        assert columns.detect(stats_of("real")).kind == "real"
    finally:
        columns.REGISTRY.unregister("negative_test_kind")


def test_an_unknown_saved_kind_is_a_clear_error():
    spec = ColumnSpec("x", "reall", "gaussian", "real values")
    with pytest.raises(ConfigError, match="unknown column kind 'reall'. Did you mean 'real'"):
        spec.describe()


def test_reals_at_or_above_2_to_the_53_are_real_not_integer():
    # above 2**53 every float64 is whole; calling it an integer scale diverged in training
    big = 2.0**53 * (1 + RNG.uniform(0, 1, 200))
    spec = columns.detect(ColumnStats.of(big, "hash"))
    assert (spec.kind, spec.standardize) == ("real", True)


def test_statistics_are_float64_at_extreme_scales():
    values = RNG.normal(1e30, 1e29, 500)
    spec = columns.detect(ColumnStats.of(values, "huge"))
    assert spec.kind == "real"
    assert spec.mean == pytest.approx(values.mean()) and spec.std == pytest.approx(values.std(ddof=1))
    model = spec.column_kind.to_model(values, spec)
    assert np.isfinite(model).all() and model.std(ddof=1) == pytest.approx(1.0, rel=1e-9)
    tiny = columns.detect(ColumnStats.of(RNG.normal(0.0, 1e-200, 50) + 1e-199, "tiny"))
    assert 0 < tiny.std < 1e-199


def test_a_schema_saved_before_kinds_were_classes_loads_and_transforms():
    # the "columns" entry of a config.json written by the string-kind version
    saved = {
        "columns": [
            {
                "name": "age",
                "kind": "integer",
                "likelihood": {"name": "discretized_gaussian", "options": {"center": 40.0, "spread": 10.0}},
                "reason": "integers",
                "mean": 40.0,
                "std": 10.0,
                "standardize": False,
                "levels": None,
                "values": None,
                "max": 80.0,
                "missing": 0,
                "warning": None,
            },
            {
                "name": "rating",
                "kind": "categorical",
                "likelihood": {
                    "name": "categorical",
                    "options": {"num_categories": 3, "values": [1.0, 2.0, 5.0]},
                },
                "reason": "3 values",
                "mean": 2.0,
                "std": 1.0,
                "standardize": False,
                "levels": ["1", "2", "5"],
                "values": [1.0, 2.0, 5.0],
                "max": 5.0,
                "missing": 0,
                "warning": None,
            },
            {
                "name": "income",
                "kind": "real",
                "likelihood": "gaussian",
                "reason": "real values",
                "mean": 100.0,
                "std": 20.0,
                "standardize": True,
                "levels": None,
                "values": None,
                "max": 180.0,
                "missing": 0,
                "warning": None,
            },
        ],
        "dropped": [],
        "source_names": ["age", "rating", "income"],
    }
    schema = TableSchema.from_dict(json.loads(json.dumps(saved)))
    raw = np.array([[30.0, 5.0, 140.0], [50.0, 1.0, 60.0]])
    model = schema.transform(raw).numpy()
    np.testing.assert_allclose(model, [[30.0, 2.0, 2.0], [50.0, 0.0, -2.0]])
    np.testing.assert_allclose(schema.to_raw(schema.transform(raw)), raw, rtol=1e-6)
    assert schema.encoder_scaled == [True, False, False]
    assert schema.to_dict() == saved


def test_infer_schema_keeps_each_columns_kind_and_order():
    names = list(EXAMPLES)
    table = np.column_stack([EXAMPLES[n][0] for n in names])
    labels = {names.index("categorical"): EXAMPLES["categorical"][1]}
    schema = infer_schema(table, names, labels)
    assert [c.kind for c in schema.columns] == names
