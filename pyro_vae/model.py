r"""The probabilistic module: a VAE as a Pyro model/guide pair.

.. math::
    z_n \sim p(z), \qquad x_n \mid z_n \sim p_\theta(x \mid z_n), \qquad
    q_\phi(z_n \mid x_n) = \mathcal N(\mu_\phi(x_n), \operatorname{diag}\sigma_\phi(x_n)^2).

``vae.model`` and ``vae.guide`` are ordinary Pyro functions with one plate over the batch,
a latent site ``"z"`` (``.to_event(1)``) and an observation site ``"x"``
(``.to_event(len(input_shape))``: a data point may be a vector or an image); any Pyro
ELBO derives the loss from them. ``beta`` scales the latent site in *both* functions with
``poutine.scale``, which multiplies :math:`\log p(z) - \log q(z \mid x)`, the KL term,
and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_vae import memory
from pyro_vae.distributions import guides, likelihoods, priors
from pyro_vae.errors import ConfigError, DataError, DataTypeError, RunDirectoryError, UsageError
from pyro_vae.infer import imputation
from pyro_vae.nn import networks as nets
from pyro_vae.nn.networks import ACTIVATIONS, Decoder, GaussianEncoder
from pyro_vae.utils import positive_int

logger = logging.getLogger(__name__)


class _Unresolved:
    """Stands for the networks and likelihood of an ``"auto"`` VAE before it has seen data."""

    def _fail(self, *args, **kwargs):
        raise UsageError(
            "this VAE was built with likelihood='auto' and has not seen data yet, so its networks do not "
            "exist: call pyro_vae.fit(vae, data) first, or pass a likelihood name"
        )

    __call__ = _fail

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._fail()

    def __repr__(self) -> str:
        return "<chosen from the data by likelihood='auto'>"


_UNRESOLVED = _Unresolved()

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
FORMAT_VERSION = 1
CUSTOM = "custom"  # the network name recorded for a VAE built from the user's own modules


def input_shape_of(input_dim: int | Sequence[int]) -> tuple[int, ...]:
    """The shape of one data point: ``(input_dim,)`` for a number, the tuple for a shape."""
    if isinstance(input_dim, Sequence) and not isinstance(input_dim, (str, bytes)):
        shape = tuple(positive_int("each entry of input_dim", d) for d in input_dim)
        if not shape:
            raise ConfigError("input_dim must be a number of features or a shape such as (1, 28, 28), got ()")
        return shape
    return (positive_int("input_dim", input_dim),)


def kl_weight(beta: float | torch.Tensor):
    """The handler that weights the latent site by ``beta``.

    ``poutine.scale`` requires a positive scale; ``beta == 0`` drops the site's terms with
    ``poutine.mask`` instead, which is the same objective (reconstruction only).
    """
    if isinstance(beta, (int, float)):
        if beta == 1:
            return contextlib.nullcontext()
        if beta == 0:
            return poutine.mask(mask=False)
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
    return poutine.scale(scale=beta)


class LogWeights(NamedTuple):
    r"""The log-density terms of draws :math:`z \sim q(z \mid x)` (:meth:`VAE.log_weights`).

    ``log_px_z``, ``log_pz`` and ``log_q`` have the draws' batch shape (``(n,)`` or
    ``(k, n)``), ``z`` that shape plus ``(latent_dim,)``, and ``posterior`` is
    :math:`q(z \mid x)` itself (batch ``(n,)``, event ``(latent_dim,)``).
    """

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_q: torch.Tensor
    z: torch.Tensor
    posterior: dist.Distribution

    @property
    def log_w(self) -> torch.Tensor:
        r"""The importance log weights :math:`\log p(x, z) - \log q(z \mid x)`."""
        return self.log_px_z + self.log_pz - self.log_q

    def elbo(self, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        r"""Per draw, :math:`\log p(x \mid z) + \beta\,[\log p(z) - \log q(z \mid x)]`: the one
        place ``beta`` enters the objective (``beta = 0`` drops the latent terms, as
        ``poutine.mask(False)`` does in :func:`kl_weight`)."""
        if isinstance(beta, (int, float)):
            if beta == 1:
                return self.log_w
            if beta == 0:
                return self.log_px_z
        return self.log_px_z + beta * (self.log_pz - self.log_q)


def traces(vae: VAE, *args: Any) -> tuple[Any, Any]:
    """Pyro's traces of ``vae.guide`` and of ``vae.model`` replayed against it, as an ELBO builds them."""
    guide = poutine.trace(vae.guide).get_trace(*args)
    return guide, poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(*args)


def _first_draw(posterior: dist.Distribution) -> dist.Distribution:
    """A diagonal Gaussian guide broadcast over a leading plate of draws, as one draw's
    (batch ``(n,)``); any other distribution is returned as Pyro traced it."""
    base = getattr(posterior, "base_dist", None)
    if isinstance(base, dist.Normal) and base.batch_shape and len(posterior.batch_shape) > 1:
        return dist.Normal(base.loc[0], base.scale[0]).to_event(1)
    return posterior


class VAE(PyroModule):
    """A variational autoencoder with a selectable likelihood and prior.

    Args:
        input_dim: number of features of one data point, or its shape, e.g. ``(1, 28, 28)``
            (``input_shape``; ``input_dim`` is then the number of features, the product).
        latent_dim: dimension of ``z``.
        hidden: hidden layer widths of both built-in networks (default: the network's own,
            :data:`pyro_vae.nn.networks.NETWORKS`); ``()`` with ``network="mlp"`` gives linear
            maps, and with ``likelihood="gaussian_shared"`` and the standard normal prior the
            model is exactly factor analysis.
        likelihood: a name from :func:`pyro_vae.distributions.likelihoods.names`, a
            :class:`~pyro_vae.distributions.likelihoods.Likelihood` instance, or ``"auto"``: the
            training data decide the likelihood, missing cells and the encoder's input scale
            when :func:`pyro_vae.fit` first sees them (:func:`pyro_vae.description.complete`), and
            every module is built then, once, like PyTorch's lazy modules.
        prior: a name from :func:`pyro_vae.distributions.priors.names` or a
            :class:`~pyro_vae.distributions.priors.Prior` instance.
        guide: the amortized posterior q(z|x), a name from :func:`pyro_vae.distributions.guides.names`
            (``"diagonal"``, the encoder's Gaussian, ``"lowrank"``, ``"flow"``), a spec dict or
            a :class:`~pyro_vae.distributions.guides.Guide` instance; it is :attr:`variational` (``guide``
            is the Pyro guide function).
        activation: hidden-layer nonlinearity.
        encoder_min_scale: floor of the encoder's posterior scale.
        network: the built-in networks, ``"mlp"``, ``"conv"`` (28x28 or 32x32 images) or
            ``"gated"`` (gated dense layers).
        encoder, decoder: your own ``nn.Module`` s instead (both): the encoder maps
            ``(B, *input_shape)`` to ``(B, 2 * latent_dim)`` (location, unconstrained scale)
            or to a pair ``(loc, scale)``; the decoder maps ``(B, latent_dim)`` to
            ``(B, num_params, *input_shape)``, ``num_params`` being the likelihood's
            (``pyro_vae.distributions.likelihoods.create(name).num_params``). Both are checked by one
            forward pass here. Such a VAE is saved with ``"network": "custom"`` and loads
            with ``VAE.load(directory, encoder=..., decoder=...)``.
        missing: data may hold missing cells (NaN), vectors only: the observation site
            scores the observed cells alone and the encoder sees ``[x with NaN as 0, mask]``
            (MIWAE, :class:`~pyro_vae.nn.networks.MaskedInput`). A VAE made with
            ``likelihood="auto"`` decides it from its training data.
        input_scale: ``{"center": [...], "spread": [...]}`` per feature (vectors only): the
            encoder sees ``(x - center) / spread`` (:class:`~pyro_vae.nn.networks.ScaledInput`)
            while the likelihood scores ``x`` in its own units. A VAE made with
            ``likelihood="auto"`` sets it from the training split of a table
            (:func:`pyro_vae.data.tables.load_table`) for the columns kept in their own units.
    """

    def __init__(
        self,
        input_dim: int | Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] | None = None,
        likelihood: str | likelihoods.Likelihood | dict = "auto",
        prior: str | priors.Prior | dict = "standard_normal",
        activation: str = "relu",
        encoder_min_scale: float = 1e-4,
        network: str = "mlp",
        encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
        missing: bool = False,
        input_scale: dict[str, Sequence[float]] | None = None,
        guide: str | guides.Guide | dict = "diagonal",
    ) -> None:
        super().__init__()
        self.input_shape = input_shape_of(input_dim if input_shape is None else input_shape)
        self.input_dim = math.prod(self.input_shape)
        if input_shape is not None and isinstance(input_dim, int) and input_dim != self.input_dim:
            raise ConfigError(f"input_dim {input_dim} is not the size of input_shape {tuple(input_shape)}")
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.network = self._network_name(network, encoder, decoder, likelihood)
        self.hidden = self._widths(hidden)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        if isinstance(encoder_min_scale, bool) or not (
            isinstance(encoder_min_scale, (int, float)) and 0 < encoder_min_scale < math.inf
        ):
            raise ConfigError(f"encoder_min_scale must be a positive number, got {encoder_min_scale!r}")
        self.encoder_min_scale = float(encoder_min_scale)
        self.__dict__["_decoder_net"] = decoder  # registered once, as decoder.net, when the VAE is built
        self.__dict__["_encoder_net"] = encoder
        self.fitted = False  # set by fit(); data-dependent initialisation happens only once
        self.missing = bool(missing)
        if missing:
            self._check_missing_allowed()
        self.input_scale = self._checked_scale(input_scale)
        self.prior = priors.create(prior)  # created (and checked) now, set up when the VAE is built
        self.variational = guides.create(guide)
        # With "auto", nothing is built until the training data decide the likelihood, missing
        # cells and the encoder's input scale (pyro_vae.description.complete, the one place that
        # chooses; then build, once); until then the networks are a placeholder that explains itself.
        self.likelihood: likelihoods.Likelihood = _UNRESOLVED  # type: ignore[assignment]
        self.encoder: GaussianEncoder = _UNRESOLVED  # type: ignore[assignment]
        self.decoder: Decoder = _UNRESOLVED  # type: ignore[assignment]
        if not (isinstance(likelihood, str) and likelihood == "auto"):
            self._build(likelihoods.create(likelihood))

    def _build(self, likelihood: likelihoods.Likelihood) -> None:
        """Every module, once: the encoder, the prior and the guide set up for it, the decoder."""
        self._set_encoder(self._encoder_net)
        self.prior.setup(self.latent_dim, self.input_dim, self.encoder)
        self.variational.setup(self.latent_dim)
        self._set_likelihood(likelihood)

    def complete(
        self, likelihood: str | dict, *, missing: bool, input_scale: dict[str, Sequence[float]] | None
    ) -> None:
        """Build a VAE made with ``likelihood="auto"`` from what its training data decided
        (:func:`pyro_vae.description.complete` decides): the likelihood, missing cells, the
        encoder's input scale. Every module is built here, once."""
        if self.is_resolved:
            raise UsageError(
                "this VAE is built already: complete() builds a VAE made with likelihood='auto', once"
            )
        if missing:
            self._check_missing_allowed()
        self.missing = bool(missing)
        self.input_scale = self._checked_scale(input_scale)
        self._build(likelihoods.create(likelihood))

    def _set_encoder(self, encoder: torch.nn.Module | None) -> None:
        if encoder is None:
            shape = (2 * self.input_dim,) if self.missing else self.input_shape
            encoder = nets.network(self.network).encoder(shape, self.latent_dim, self.hidden, self.activation)
            if self.missing:
                encoder = nets.MaskedInput(encoder)
            if self.input_scale is not None:
                encoder = nets.ScaledInput(encoder, self.input_scale["center"], self.input_scale["spread"])
        self.encoder = GaussianEncoder(encoder, self.latent_dim, self.input_shape, self.encoder_min_scale)
        self.encoder.check()

    def _checked_scale(self, scale: dict[str, Sequence[float]] | None) -> dict[str, list[float]] | None:
        if scale is None:
            return None
        try:
            center, spread = [float(v) for v in scale["center"]], [float(v) for v in scale["spread"]]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"input_scale must be {{'center': [...], 'spread': [...]}}, got {scale!r}"
            ) from None
        if len(self.input_shape) != 1 or len(center) != self.input_dim or len(spread) != self.input_dim:
            raise ConfigError(f"input_scale needs {self.input_dim} centers and spreads, for vectors")
        if not all(math.isfinite(c) for c in center) or not all(0 < s < math.inf for s in spread):
            raise ConfigError("input_scale's centers must be finite and its spreads positive")
        return {"center": center, "spread": spread}

    def _check_missing_allowed(self) -> None:
        """A :class:`~pyro_vae.errors.ConfigError` unless missing cells can be turned on."""
        if self.network == CUSTOM or len(self.input_shape) != 1 or self.fitted:
            raise ConfigError(
                "missing cells (NaN) need a VAE built for them: an untrained VAE of vectors with a built-in "
                "network, VAE(..., missing=True); this one "
                + (
                    "is trained"
                    if self.fitted
                    else "has your own encoder"
                    if self.network == CUSTOM
                    else "takes images"
                )
                + "; impute or drop the missing cells first"
            )

    @staticmethod
    def _network_name(network: str, encoder, decoder, likelihood) -> str:
        if (encoder is None) != (decoder is None):
            raise ConfigError("pass both encoder= and decoder= (your own modules), or neither (network=...)")
        if encoder is None:
            nets.network(network)  # a clear error for an unknown name
            return network
        for role, module in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(module, torch.nn.Module):
                raise ConfigError(f"{role} must be a torch.nn.Module, got {type(module).__name__}")
        if isinstance(likelihood, str) and likelihood == "auto":
            raise ConfigError(
                "a custom decoder needs a named likelihood (its num_params fixes the decoder's output "
                "shape), not 'auto': e.g. likelihood='bernoulli', whose num_params is "
                "pyro_vae.distributions.likelihoods.create('bernoulli').num_params"
            )
        return CUSTOM

    def _widths(self, hidden: Sequence[int] | None) -> tuple[int, ...]:
        if hidden is None:
            return nets.NETWORKS[self.network].default_hidden if self.network != CUSTOM else ()
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ConfigError(f"hidden must be a sequence of layer widths such as (256, 256), got {hidden!r}")
        return tuple(positive_int("hidden layer width", h) for h in hidden)

    # ------------------------------------------------------------------ likelihood

    @property
    def _likelihood_shape(self) -> int | tuple[int, ...]:
        """What ``Likelihood.setup`` gets: the number of features for vectors, else the shape."""
        return self.input_dim if len(self.input_shape) == 1 else self.input_shape

    @property
    def device(self) -> torch.device:
        # an "auto" VAE before its data has no networks, and goes where fit puts it
        return torch.device("cpu") if self.encoder is _UNRESOLVED else nets._device_of(self.encoder)

    def _set_likelihood(self, likelihood: likelihoods.Likelihood) -> None:
        likelihood.setup(self._likelihood_shape)
        net = self._decoder_net
        if net is None:
            build = nets.network(self.network).decoder
            net = build(
                self.input_shape, self.latent_dim, self.hidden, likelihood.num_params, self.activation
            )
        decoder = Decoder(net, self.latent_dim, self.input_shape, likelihood.num_params)
        device = self.device
        decoder.to(device)
        decoder.check()
        self.likelihood = likelihood
        self.decoder = decoder
        self.likelihood.to(device)

    @property
    def is_resolved(self) -> bool:
        return self.likelihood is not _UNRESOLVED

    def reset_parameters(self, seed: int) -> None:
        """Initialise every weight from ``seed`` (``fit`` does this for an untrained VAE).

        The same seed gives the same initial model whether the likelihood was named or
        chosen by ``"auto"``; the global random streams are left as they were.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.modules():
                if module is not self and callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
            device = self.device
            self.prior.setup(self.latent_dim, self.input_dim, self.encoder)
            self.likelihood.setup(self._likelihood_shape)
            self.prior.to(device)
            self.likelihood.to(device)

    # ------------------------------------------------------------------ Pyro model and guide

    def model(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> None:
        r""":math:`p(z)\,p_\theta(x \mid z)`, with the latent site scaled by ``beta``."""
        x, observed = self.observed_part(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            with kl_weight(beta):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.observation(z, x, observed), obs=x)

    def guide(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> None:
        r""":math:`q_\phi(z \mid x)`, with the latent site scaled by ``beta``."""
        x = self.shaped(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            posterior = self.posterior(x)
            with kl_weight(beta):
                pyro.sample("z", posterior)

    # The model's and guide's distributions, defined once: Pyro's sites above and the
    # traced training step (pyro_vae.infer.replayed_elbo) both read them.

    def observed_part(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` shaped, its missing cells replaced by a placeholder in the support, and the
        mask of observed cells (None for a VAE without ``missing``)."""
        x = self.shaped(x)
        if not self.missing:
            return x, None
        observed = ~torch.isnan(x)
        return torch.where(observed, x, self.likelihood.placeholder(x)), observed

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        r""":math:`q_\phi(z \mid x)` for a shaped batch, event shape ``(latent_dim,)``: the guide
        (:attr:`variational`, :mod:`pyro_vae.distributions.guides`) applied to the encoder's Gaussian."""
        return self.variational(*self.encoder(x))

    def observation(
        self, z: torch.Tensor, x: torch.Tensor, observed: torch.Tensor | None = None
    ) -> dist.Distribution:
        r""":math:`p_\theta(x \mid z)` of the observation site, masked to the ``observed`` cells."""
        observation = self.likelihood.observation(self.decoder(z), x)
        if observed is not None:
            observation = observation.mask(observed)
        return observation.to_event(len(self.input_shape))

    # ------------------------------------------------------------------ the log-density seam

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log p_\theta(x \mid z)` and :math:`\log p(z)` at codes ``z`` ``(..., n, latent_dim)``.

        ``x`` is ``(n, ...)`` in any shape the VAE accepts (images flattened or not); a VAE
        built with ``missing=True`` scores the observed cells only (NaN marks a missing one).
        Both results have ``z``'s batch shape ``(..., n)``. This and :meth:`log_weights` are
        the one place the model's log-density is written: the replayed training step,
        importance sampling, imputation, AIS, PSIS and NUTS all call them.
        """
        if z.dim() < 2 or z.shape[-1] != self.latent_dim or z.shape[-2] != x.shape[0]:
            raise DataError(
                f"codes z must be (..., n, latent_dim) = (..., {x.shape[0]}, {self.latent_dim}) for "
                f"{x.shape[0]} data points, got {tuple(z.shape)}"
            )
        x, observed = self.observed_part(x)
        return self.observation(z, x, observed).log_prob(x), self.prior().log_prob(z)

    def log_weights(self, x: torch.Tensor, num_samples: int | None = None) -> LogWeights:
        r"""Draws :math:`z \sim q(z \mid x)` and their log-density terms (:class:`LogWeights`).

        ``num_samples=None`` draws one ``z`` per point (shapes ``(n,)`` and
        ``(n, latent_dim)``); a number ``k`` draws ``k`` (shapes ``(k, n)`` and
        ``(k, n, latent_dim)``), the draws Pyro's guide makes under a plate of ``k`` samples.
        The draws are reparameterised, so gradients flow to the networks. A subclass that
        overrides ``model`` or ``guide`` is traced as Pyro sees it instead.
        """
        if num_samples is not None:
            positive_int("num_samples", num_samples)
        if self.own_structure() is not None:
            return self._traced_log_weights(x, num_samples)
        posterior = self.posterior(self.shaped(x))  # the encoder sees missing cells as NaN
        z = posterior.rsample(() if num_samples is None else (num_samples,))
        log_px_z, log_pz = self.log_joint(z, x)
        return LogWeights(log_px_z, log_pz, posterior.log_prob(z), z, posterior)

    def _traced_log_weights(self, x: torch.Tensor, num_samples: int | None) -> LogWeights:
        plate = (
            contextlib.nullcontext() if num_samples is None else pyro.plate("samples", num_samples, dim=-2)
        )
        with plate:
            guide_trace, model_trace = traces(self, x)
        q_site, z_site, x_site = guide_trace.nodes["z"], model_trace.nodes["z"], model_trace.nodes["x"]
        z = q_site["value"]
        log_px_z = x_site["fn"].log_prob(x_site["value"])
        posterior = q_site["fn"]
        if num_samples is not None:  # the guide's distribution broadcast over the plate of draws
            posterior = _first_draw(posterior)
        return LogWeights(log_px_z, z_site["fn"].log_prob(z), q_site["fn"].log_prob(z), z, posterior)

    def own_structure(self) -> str | None:
        """Why ``model`` and ``guide`` may not be the sites of this VAE's distributions
        (:meth:`posterior`, ``prior()``, :meth:`observation`), or None when they are."""
        for name in ("model", "guide", "posterior", "observation", "observed_part", "log_joint"):
            if getattr(type(self), name) is not getattr(VAE, name):
                return f"{type(self).__name__} overrides {name}"
        return None

    # ------------------------------------------------------------------ user-facing maps

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """Whether a batch of this shape is data for this VAE: ``(n, *input_shape)``, or for
        images also ``(n, input_dim)`` (flattened) and ``(n, H, W)`` for ``input_shape=(1, H, W)``."""
        shape, own = tuple(shape[1:]), self.input_shape
        if len(own) == 1:
            return shape == own
        return shape in (own, (self.input_dim,), tuple(d for d in own if d != 1))

    def shaped(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(n, *input_shape)`` (a view; flattened images regain their shape)."""
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        return x.reshape(x.shape[0], *self.input_shape)

    def check_data(self, x: torch.Tensor, *, support: bool = True, finite: bool = True) -> None:
        """Raise ``ValueError`` unless ``x`` is a finite ``(n, *input_shape)`` batch in the likelihood's support."""
        if not isinstance(x, torch.Tensor):
            raise DataTypeError(
                f"expected a torch.Tensor, got {type(x).__name__}: pass torch.as_tensor(x, dtype=torch.float32)"
            )
        if not x.is_floating_point():  # the networks' weights are floats: torch would name its matrices
            raise DataTypeError(f"expected a floating-point tensor, got {x.dtype}: convert it with x.float()")
        if x.dim() < 2 or not self.accepts_shape(x.shape):
            shape = ", ".join(map(str, self.input_shape))
            hint = (
                "flatten images to vectors first, or build the VAE with input_dim=<the image shape>"
                if len(self.input_shape) == 1
                else f"images of shape ({shape}) or flattened to {self.input_dim} features"
            )
            raise DataError(f"expected data of shape (n, {shape}), got {tuple(x.shape)}; {hint}")
        # One reduction first (a finite sum means finite entries); the full check only on failure.
        if finite and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            if torch.isinf(x).any():
                n = int(torch.isinf(x).sum())
                raise DataError(
                    f"data contain {n} infinite values; remove them first (NaN marks a missing cell)"
                )
            if not self.missing:
                n = int(torch.isnan(x).sum())
                raise DataError(
                    f"data contain {n} NaN (missing) cells, and this VAE was built without missing=True: "
                    "build it with VAE(..., missing=True) (a VAE made with likelihood='auto' decides it from its "
                    "training data), or impute the cells first"
                )
        if support and self.is_resolved:
            self.likelihood.check_data(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and standard deviation, each ``(n, latent_dim)`` (estimated from
        draws for a guide without closed forms, :meth:`pyro_vae.distributions.guides.Guide.moments`)."""
        self.check_data(x, support=False)
        return self.variational.moments(self.posterior(self.shaped(x)))

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """:math:`p_\\theta(x \\mid z)` with event shape ``input_shape``."""
        if not isinstance(z, torch.Tensor):
            raise DataTypeError(
                f"expected codes as a torch.Tensor, got {type(z).__name__}: pass a tensor of shape (..., {self.latent_dim})"
            )
        if z.shape[-1] != self.latent_dim:
            raise DataError(
                f"expected codes with last dimension {self.latent_dim}, got {tuple(z.shape)}: pass codes of shape "
                f"(..., {self.latent_dim})"
            )
        return self.likelihood(self.decoder(z)).to_event(len(self.input_shape))

    def data_mean(self, d: dist.Distribution) -> torch.Tensor:
        """The mean of a distribution returned by :meth:`decode`."""
        return self.likelihood.mean(d.base_dist)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` draws of ``x`` from the model (``mean=True``: the decoder means at prior draws of ``z``)."""
        positive_int("n", n)
        memory.check_chunk(self, n, device=self.device, what=f"{n:,} draws", fix="draw fewer at a time")
        z = self.prior().sample((n,))
        d = self.decode(z)
        return self.data_mean(d) if mean else d.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the posterior mean of ``z``."""
        loc, _ = self.encode(x)
        return self.data_mean(self.decode(loc))

    def impute(
        self, x: torch.Tensor, num_samples: int = 1000, *, draws: bool = False, seed: int = 0
    ) -> torch.Tensor:
        """``x`` with its missing (NaN) cells filled by the model; see :func:`pyro_vae.infer.imputation.impute`."""
        return imputation.impute(self, x, num_samples, draws=draws, seed=seed)

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (not its weights), as JSON-ready data."""
        config: dict[str, Any] = {"input_dim": self.input_dim}
        if len(self.input_shape) > 1:
            config["input_shape"] = list(self.input_shape)
        return (
            config
            | {
                "network": self.network,
                "latent_dim": self.latent_dim,
                "hidden": list(self.hidden),
                "likelihood": self.likelihood.spec(),
                "prior": self.prior.spec(),
                "activation": self.activation,
                "encoder_min_scale": self.encoder_min_scale,
            }
            | ({"missing": True} if self.missing else {})
            # The default guide is left out: config.json of a diagonal-guide VAE is as before.
            | ({"guide": self.variational.spec()} if self.variational.name != "diagonal" else {})
            | ({"input_scale": self.input_scale} if self.input_scale is not None else {})
        )

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None,
    ) -> VAE:
        """The VAE that ``config`` (from :meth:`config`) describes; a ``"custom"`` network
        needs the ``encoder`` and ``decoder`` modules, the built-ins are rebuilt by name."""
        cls.check_modules(config, encoder, decoder)
        config = dict(config)
        if config.get("network") == CUSTOM:
            del config["network"]
            return cls(**config, encoder=encoder, decoder=decoder)
        return cls(**config)

    @staticmethod
    def check_modules(config: dict[str, Any], encoder, decoder) -> None:
        """A :class:`~pyro_vae.errors.ConfigError` unless the modules suit the saved network:
        both for ``"custom"``, none for a built-in one (rebuilt from the config)."""
        if config.get("network") == CUSTOM:
            if encoder is None or decoder is None:
                raise ConfigError(
                    "this VAE was built from your own encoder and decoder modules (network 'custom'): "
                    "pass them again, VAE.load(directory, encoder=..., decoder=...)"
                )
        elif encoder is not None or decoder is not None:
            raise ConfigError(
                f"this VAE uses the built-in network {config.get('network', 'mlp')!r}, rebuilt from its "
                "config: do not pass encoder= or decoder="
            )

    def save(
        self,
        directory: str | Path,
        *,
        extra: dict[str, Any] | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write ``config.json`` and ``model.pt`` (a state dict) into ``directory``.

        ``extra`` adds sections to ``config.json`` (a run's settings, its preprocessing);
        sections other than ``"model"`` already in an existing ``config.json`` are kept, so
        checkpointing into a run directory does not erase the run's settings.
        ``state_dict`` saves those weights instead of the current ones.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise RunDirectoryError(
                f"cannot save the model into {directory}: it is a file; choose a directory"
            )
        directory.mkdir(parents=True, exist_ok=True)
        from pyro_vae.io import atomic_torch_save, atomic_write_json, read_json
        from pyro_vae.version import __version__

        payload: dict[str, Any] = {}
        if (directory / CONFIG_FILE).is_file():  # damaged: a ConfigError, not lost run settings
            payload = read_json(directory / CONFIG_FILE)
        payload.update(format_version=FORMAT_VERSION, pyro_vae_version=__version__, model=self.config())
        payload.update(extra or {})
        atomic_write_json(directory / CONFIG_FILE, payload)
        atomic_torch_save(self.state_dict() if state_dict is None else state_dict, directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        map_location: str | torch.device = "cpu",
        *,
        encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None,
    ) -> VAE:
        """Rebuild a model saved by :meth:`save`.

        A VAE built from your own modules (``"network": "custom"`` in ``config.json``) needs
        them again as ``encoder=`` and ``decoder=``; their weights come from ``model.pt``, and
        modules that do not fit those weights are a :class:`~pyro_vae.errors.CheckpointError`.
        The weights load with ``weights_only=True`` (a file never runs code) and must be
        finite; a missing, damaged or mismatched ``config.json`` or ``model.pt`` raises a
        :class:`~pyro_vae.errors.ConfigError` or :class:`~pyro_vae.errors.CheckpointError`
        naming the file, never a bare traceback.
        """
        from pyro_vae.errors import CheckpointError, ConfigError
        from pyro_vae.io import load_state_into, load_tensors, read_json

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(
                f"no {CONFIG_FILE} in {directory}: is this a directory written by VAE.save?"
            )
        payload = read_json(config_path)
        version = payload.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(
                f"{config_path} has format_version {version!r}, and this pyro_vae reads "
                f"format {FORMAT_VERSION}: it was written by a newer pyro_vae "
                f"({payload.get('pyro_vae_version', 'version unknown')}) or edited; load it with that version"
            )
        if not isinstance(payload.get("model"), dict):
            raise ConfigError(f"{config_path} has no 'model' section: not written by VAE.save")
        custom = payload["model"].get("network") == CUSTOM
        try:
            cls.check_modules(payload["model"], encoder, decoder)
        except ConfigError as exc:  # which modules are missing or not wanted
            raise ConfigError(f"{config_path}: {exc}") from None
        try:
            vae = cls.from_config(payload["model"], encoder=encoder, decoder=decoder)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{config_path}: its 'model' section does not describe a VAE ({exc}); "
                "was it written by another version of pyro_vae, or edited?"
            ) from exc
        weights = directory / WEIGHTS_FILE
        state = load_tensors(weights, what="model weights", map_location=map_location, finite=True)
        try:
            load_state_into(vae, state, weights, config=config_path)
        except CheckpointError as exc:
            if not custom:
                raise
            raise CheckpointError(
                f"the encoder and decoder passed to VAE.load do not fit the weights saved in {weights}: "
                f"pass modules built as for training ({exc})"
            ) from None
        vae.fitted = True
        return vae.to(map_location)
