r"""The probabilistic module: a VAE as a Pyro model/guide pair.

.. math::
    z_n \sim p(z), \qquad x_n \mid z_n \sim p_\theta(x \mid z_n), \qquad
    q_\phi(z_n \mid x_n) = \mathcal N(\mu_\phi(x_n), \operatorname{diag}\sigma_\phi(x_n)^2).

``vae.model`` and ``vae.guide`` are ordinary Pyro functions with one plate over the batch,
a latent site ``"z"`` and an observation site ``"x"`` (both ``.to_event(1)``); any Pyro
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
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_vae import likelihoods, priors
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.networks import ACTIVATIONS, Decoder, GaussianEncoder
from pyro_vae.utils import positive_int

logger = logging.getLogger(__name__)


class _Unresolved:
    """Stands for the likelihood and decoder of an ``"auto"`` VAE before it has seen data."""

    def _fail(self, *args, **kwargs):
        raise RuntimeError(
            "this VAE was built with likelihood='auto' and has not seen data yet: call "
            "pyro_vae.fit(vae, data) or vae.resolve_likelihood(data) first, or pass a likelihood name"
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
            raise ValueError(f"beta must be >= 0, got {beta}")
    return poutine.scale(scale=beta)


class VAE(PyroModule):
    """A variational autoencoder with a selectable likelihood and prior.

    Args:
        input_dim: number of features of one data point (flatten images first).
        latent_dim: dimension of ``z``.
        hidden: hidden layer widths of both networks; ``()`` gives linear maps, and
            with ``likelihood="gaussian_shared"`` and the standard normal prior the
            model is exactly factor analysis.
        likelihood: a name from :func:`pyro_vae.likelihoods.names`, a
            :class:`~pyro_vae.likelihoods.Likelihood` instance, or ``"auto"`` to choose
            from the training data's support when :func:`pyro_vae.fit` first sees it.
        prior: a name from :func:`pyro_vae.priors.names` or a
            :class:`~pyro_vae.priors.Prior` instance.
        activation: hidden-layer nonlinearity.
        encoder_min_scale: floor of the encoder's posterior scale.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        likelihood: str | likelihoods.Likelihood | dict = "auto",
        prior: str | priors.Prior | dict = "standard_normal",
        activation: str = "relu",
        encoder_min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.input_dim = positive_int("input_dim", input_dim)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ConfigError(f"hidden must be a sequence of layer widths such as (256, 256), got {hidden!r}")
        self.hidden = tuple(positive_int("hidden layer width", h) for h in hidden)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        if isinstance(encoder_min_scale, bool) or not (
            isinstance(encoder_min_scale, (int, float)) and 0 < encoder_min_scale < math.inf
        ):
            raise ConfigError(f"encoder_min_scale must be a positive number, got {encoder_min_scale!r}")
        self.encoder_min_scale = float(encoder_min_scale)
        self.encoder = GaussianEncoder(input_dim, latent_dim, self.hidden, activation, encoder_min_scale)
        self.prior = priors.create(prior)
        self.prior.setup(latent_dim, input_dim, self.encoder)
        self.fitted = False  # set by fit(); data-dependent initialisation happens only once
        # With "auto", the likelihood and the decoder wait for data (resolve_likelihood, the
        # one place that chooses); until then both are a placeholder that explains itself.
        self.likelihood: likelihoods.Likelihood = _UNRESOLVED  # type: ignore[assignment]
        self.decoder: Decoder = _UNRESOLVED  # type: ignore[assignment]
        if not (isinstance(likelihood, str) and likelihood == "auto"):
            self._set_likelihood(likelihoods.create(likelihood))

    # ------------------------------------------------------------------ likelihood

    def _set_likelihood(self, likelihood: likelihoods.Likelihood) -> None:
        likelihood.setup(self.input_dim)
        self.likelihood = likelihood
        self.decoder = Decoder(
            self.latent_dim, self.input_dim, self.hidden, likelihood.num_params, self.activation
        )
        device = self.encoder.net[0].weight.device
        self.likelihood.to(device)
        self.decoder.to(device)

    @property
    def is_resolved(self) -> bool:
        return self.likelihood is not _UNRESOLVED

    def resolve_likelihood(self, x: torch.Tensor) -> tuple[str, str | None]:
        """Choose the likelihood for ``likelihood="auto"`` from the data's support.

        Returns the likelihood's name and why ``auto`` chose it; a VAE whose likelihood is
        already set is left as it is, and the reason is ``None``.
        """
        if self.is_resolved:
            return self.likelihood.name, None
        name, reason = likelihoods.choose_likelihood(x)
        logger.info("likelihood='auto' chose %r because %s", name, reason)
        self._set_likelihood(likelihoods.create(name))
        return name, reason

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
            device = self.encoder.net[0].weight.device
            self.prior.setup(self.latent_dim, self.input_dim, self.encoder)
            self.likelihood.setup(self.input_dim)
            self.prior.to(device)
            self.likelihood.to(device)

    # ------------------------------------------------------------------ Pyro model and guide

    def model(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> None:
        r""":math:`p(z)\,p_\theta(x \mid z)`, with the latent site scaled by ``beta``."""
        with pyro.plate("data", x.shape[0], dim=-1):
            with kl_weight(beta):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood.observation(self.decoder(z), x).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> None:
        r""":math:`q_\phi(z \mid x)`, with the latent site scaled by ``beta``."""
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.encoder(x)
            with kl_weight(beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # ------------------------------------------------------------------ user-facing maps

    def check_data(self, x: torch.Tensor, *, support: bool = True, finite: bool = True) -> None:
        """Raise ``ValueError`` unless ``x`` is a finite ``(n, input_dim)`` batch in the likelihood's support."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"expected data of shape (n, {self.input_dim}), got {tuple(x.shape)}; "
                "flatten images to vectors first"
            )
        # One reduction first (a finite sum means finite entries); the full check only on failure.
        if finite and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            n = int((~torch.isfinite(x)).sum())
            raise DataError(f"data contain {n} NaN or infinite values; remove or impute them first")
        if support and self.is_resolved:
            self.likelihood.check_data(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and standard deviation, each ``(n, latent_dim)``."""
        self.check_data(x, support=False)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """:math:`p_\\theta(x \\mid z)` with event shape ``(input_dim,)``."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"expected codes with last dimension {self.latent_dim}, got {tuple(z.shape)}")
        return self.likelihood(self.decoder(z)).to_event(1)

    def data_mean(self, d: dist.Distribution) -> torch.Tensor:
        """The mean of a distribution returned by :meth:`decode`."""
        return self.likelihood.mean(d.base_dist)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` draws of ``x`` from the model (``mean=True``: the decoder means at prior draws of ``z``)."""
        positive_int("n", n)
        z = self.prior().sample((n,))
        d = self.decode(z)
        return self.data_mean(d) if mean else d.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the posterior mean of ``z``."""
        loc, _ = self.encode(x)
        return self.data_mean(self.decode(loc))

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (not its weights), as JSON-ready data."""
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "likelihood": self.likelihood.spec(),
            "prior": self.prior.spec(),
            "activation": self.activation,
            "encoder_min_scale": self.encoder_min_scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        return cls(**config)

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
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> VAE:
        """Rebuild a model saved by :meth:`save`.

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
        if not isinstance(payload.get("model"), dict):
            raise ConfigError(f"{config_path} has no 'model' section: not written by VAE.save")
        try:
            vae = cls.from_config(payload["model"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{config_path}: its 'model' section does not describe a VAE ({exc}); "
                "was it written by another version of pyro_vae, or edited?"
            ) from exc
        weights = directory / WEIGHTS_FILE
        state = load_tensors(weights, what="model weights", map_location=map_location, finite=True)
        load_state_into(vae, state, weights, config=config_path)
        vae.fitted = True
        return vae.to(map_location)
