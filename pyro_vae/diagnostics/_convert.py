"""The one conversion from arrays to ``arviz.InferenceData``.

Every InferenceData of :mod:`pyro_vae.diagnostics` is built by :func:`to_arviz`, so that a
move to ArviZ 1.x (where the converters return an ``xarray.DataTree``) touches this file alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import arviz as az
import numpy as np

Groups = Mapping[str, Mapping[str, np.ndarray]]


def to_arviz(
    groups: Groups,
    coords: Mapping[str, Sequence | np.ndarray],
    dims: Mapping[str, Mapping[str, list[str]]],
    *,
    obs_labels: Sequence | np.ndarray | None = None,
    attrs: Mapping[str, str | int | float] | None = None,
) -> az.InferenceData:
    """Arrays to an ``InferenceData`` through ``az.from_dict``, one group at a time.

    Args:
        groups: group name -> variable name -> array. Sampled groups (``posterior``,
            ``posterior_predictive``, ``log_likelihood``, ``sample_stats``, ``prior``) hold
            ``(chain, draw, *dims)`` arrays; data groups (``observed_data``,
            ``constant_data``) hold ``(*dims)`` arrays.
        coords: values of the named dimensions (``obs``, ``latent``, ``feature``).
        dims: group name -> variable name -> its dimension names after ``(chain, draw)``.
            Per group, because one variable has other dimensions in different groups:
            ``z`` is ``(obs, latent)`` in the posterior and ``(latent,)`` in the prior.
        obs_labels: class labels, attached as a coordinate ``label`` along ``obs``.
        attrs: metadata of the whole object (netCDF attributes: strings and numbers).

    This is the only function that calls an ArviZ converter; ArviZ 1.x changes the
    converters' return type, so the move to it is a change to this function alone.
    """
    datasets = {}
    for group, variables in groups.items():
        converted = az.from_dict(
            **{group: dict(variables)}, coords=dict(coords), dims=dict(dims.get(group, {}))
        )
        ds = getattr(converted, group)
        if obs_labels is not None and "obs" in ds.dims:
            ds = ds.assign_coords(label=("obs", np.asarray(obs_labels)))
        datasets[group] = ds
    return az.InferenceData(attrs=dict(attrs) if attrs else None, **datasets)
