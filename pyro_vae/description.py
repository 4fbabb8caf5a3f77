r"""The model description and its resolver: every setting of a VAE defined once, completed
from the training data in one place before any module is built.

:class:`ModelConfig` is the description (the ``"model"`` section of a run's
``config.json``; the command-line model flags and the scikit-learn estimators' model
parameters are generated from it). :func:`resolve` turns *(description, training data)*
into a :class:`Resolved` description: the input shape, the latent size, the likelihood
(``"auto"`` decided here and only here, per column for a table), missing-cell handling and
the encoder's input scale, each with the reason it was chosen. :func:`build` then constructs
the :class:`~pyro_vae.model.VAE` once, from that complete description.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from pyro_vae import memory
from pyro_vae.data.arrays import DataSplits
from pyro_vae.distributions import guides, likelihoods, priors
from pyro_vae.model import VAE
from pyro_vae.nn import networks as nets
from pyro_vae.nn.networks import ACTIVATIONS, NETWORKS
from pyro_vae.settings import Settings, at_least, each_positive, setting

DEFAULT_LATENT = 8  # latent dimensions unless the data call for more


@dataclass
class ModelConfig(Settings):
    SECTION = "model"

    latent_dim: int | None = setting(
        None,
        f"dimension of the latent code z (default {DEFAULT_LATENT}; for a table of more than "
        f"{2 * DEFAULT_LATENT} columns, half its columns)",
        check=at_least(1),
    )
    network: str = setting(
        "mlp",
        "the encoder and decoder: mlp (dense), conv (28x28 or 32x32 images) or gated (gated dense)",
        choices=lambda: sorted(NETWORKS),
    )
    hidden: list[int] | None = setting(
        None,
        "hidden layer widths of both networks (null: the network's own, mlp 256,256, conv none, "
        "gated 300,300; 'linear' on the command line: no hidden layer)",
        check=lambda v: None if v is None else each_positive(v),
    )
    likelihood: str = setting(
        "auto",
        "the observation distribution ('auto': chosen from the data)",
        choices=lambda: ["auto", *likelihoods.names()],
    )
    likelihood_options: dict = setting({}, 'options of the likelihood, e.g. {"min_scale": 0.01}')
    prior: str = setting("standard_normal", "the prior p(z)", choices=lambda: priors.names())
    prior_options: dict = setting({}, 'options of the prior, e.g. {"num_components": 20}')
    guide: str = setting(
        "diagonal",
        "the guide q(z|x): diagonal (the encoder's Gaussian), lowrank (a Gaussian with a covariance factor) "
        "or flow (autoregressive flows on the encoder's Gaussian); docs/guides.md",
        choices=lambda: guides.names(),
    )
    guide_options: dict = setting({}, 'options of the guide, e.g. {"layers": 4, "transform": "spline"}')
    activation: str = setting("relu", "hidden-layer nonlinearity", choices=lambda: sorted(ACTIVATIONS))

    def latent_size(self, num_features: int, table: bool = False) -> int:
        """``latent_dim``, or the default for the data: 8, or half the columns of a table
        wider than 16, whose correlated columns may need more. The evidence is mixed: in
        ``benchmarks/results/defaults.json`` latent 8 scores 0.45 nats per row above 15 on
        the 30-column breast cancer table (2 splits) and the rule changes no other table."""
        if self.latent_dim is not None:
            return self.latent_dim
        if table and num_features > 2 * DEFAULT_LATENT:
            return math.ceil(num_features / 2)
        return DEFAULT_LATENT

    def widths(self) -> list[int]:
        """``hidden``, or the network's default widths when it is not set."""
        return list(NETWORKS[self.network].default_hidden if self.hidden is None else self.hidden)


@dataclass(frozen=True)
class Resolved:
    """A complete model description: nothing left for the data to decide.

    ``reasons`` says, for each choice the data made (the likelihood, missing cells, the
    encoder's input scale), why; :meth:`vae_options` are the :class:`~pyro_vae.model.VAE`
    constructor's arguments.
    """

    input_shape: int | tuple[int, ...]
    latent_dim: int
    hidden: tuple[int, ...]
    likelihood: Any
    prior: dict[str, Any]
    activation: str
    network: str
    missing: bool = False
    input_scale: dict[str, list[float]] | None = None
    guide: dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "diagonal", "options": {}})
    reasons: tuple[str, ...] = ()
    likelihood_reason: str | None = None  # why "auto" chose the likelihood (None: it was named)

    def vae_options(self) -> dict[str, Any]:
        # every field but the reasons is a constructor argument; only the input's is named otherwise
        options = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_BUILT
        }
        options["input_dim"] = options.pop("input_shape")
        return options


_NOT_BUILT = ("reasons", "likelihood_reason")  # Resolved's fields that record why, not what is built


def input_shape(model: ModelConfig, splits: DataSplits) -> int | tuple[int, ...]:
    """What the VAE sees: the data's own shape when they are images ``(n, C, H, W)``; for
    flattened images (MNIST, digits) the image shape, channels first, with ``conv``, and the
    number of features with ``mlp`` and ``gated``."""
    if splits.train.dim() > 2:
        return tuple(splits.train.shape[1:])
    shape = splits.image_shape
    if model.network != "conv" or shape is None:
        return splits.num_features
    return (1, *shape) if len(shape) == 2 else tuple(shape)


class Decided(NamedTuple):
    """What the training data decide, with the reasons: the rule :func:`resolve` and
    :func:`complete` share."""

    likelihood: Any  # the likelihood's spec
    why: str | None  # why "auto" chose it (None: it was named)
    input_scale: dict[str, list[float]] | None
    reasons: tuple[str, ...]


def decide(data: Any, *, vector: bool, has_missing: bool, likelihood: Any = None) -> Decided:
    """The likelihood (``None``: "auto" chooses, per column for a table), missing cells and the
    encoder's input scale that ``data`` call for (a :class:`~pyro_vae.data.DataSplits`, a tensor
    or batches; only a table's splits call for an input scale)."""
    reasons, why = [], None
    if likelihood is None:
        likelihood, why = likelihoods.choose_auto(data, vector=vector)
        reasons.append(f"likelihood 'auto' chose {likelihoods.create(likelihood).name!r}: {why}")
    if has_missing:
        reasons.append("missing cells: the likelihood scores the observed cells, the encoder sees the mask")
    columns, scale = getattr(data, "columns", None), None
    if columns is not None and any(columns.encoder_scaled):
        scale = nets.input_scale(data.train, columns.encoder_scaled)
        reasons.append(
            "the encoder sees the columns kept in their own units (counts, integers) standardized "
            "(training split's statistics)"
        )
    return Decided(likelihood, why, scale, tuple(reasons))


def resolve(model: ModelConfig, splits: DataSplits) -> Resolved:
    """The complete description of the VAE ``model`` describes for the training data ``splits``."""
    shape = input_shape(model, splits)
    size = shape if isinstance(shape, int) else math.prod(shape)
    named = (
        None
        if model.likelihood == "auto"
        else {"name": model.likelihood, "options": model.likelihood_options}
    )
    decided = decide(splits, vector=isinstance(shape, int), has_missing=splits.has_missing, likelihood=named)
    return Resolved(
        input_shape=shape,
        latent_dim=model.latent_size(size, splits.columns is not None),
        hidden=tuple(model.widths()),
        likelihood=decided.likelihood,
        prior={"name": model.prior, "options": model.prior_options},
        activation=model.activation,
        network=model.network,
        missing=splits.has_missing,
        input_scale=decided.input_scale,
        guide={"name": model.guide, "options": model.guide_options},
        reasons=decided.reasons,
        likelihood_reason=decided.why,
    )


def build(resolved: Resolved) -> VAE:
    """The VAE of a complete description, every module built once (its size checked first,
    on the meta device, so that an impossible one is refused before torch allocates it)."""

    def construct() -> VAE:
        return VAE(**resolved.vae_options())

    memory.check_model_size(construct)
    return construct()


# ------------------------------------------------------------------ a VAE made before its data


def complete(vae: VAE, data: Any, *, has_missing: bool) -> list[str]:
    """Decide what a VAE made with ``likelihood="auto"`` left to its training data, by
    :func:`resolve`'s rule (:func:`decide`), and build it (:meth:`~pyro_vae.model.VAE.complete`, once).

    ``data`` is a :class:`~pyro_vae.data.DataSplits` (a table's: each column's likelihood, the
    encoder's input scale for the columns kept in their own units) or the training data (a
    tensor or batches: the likelihood from their support); ``has_missing``: they hold NaN
    cells. A VAE built already is left as it is. Returns what was decided, and why.
    """
    if vae.is_resolved:
        return []
    decided = decide(data, vector=len(vae.input_shape) == 1, has_missing=has_missing)
    vae.complete(decided.likelihood, missing=has_missing, input_scale=decided.input_scale)
    return list(decided.reasons)
