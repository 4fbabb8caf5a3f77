"""pyro_vae: variational autoencoders written as Pyro models, with the loss derived, not hand-written."""

__version__ = "0.1.0"

from pyro_vae import data, likelihoods, priors  # noqa: E402
from pyro_vae.evaluation import evaluate  # noqa: E402
from pyro_vae.model import VAE  # noqa: E402
from pyro_vae.objectives import BetaSchedule, make_elbo  # noqa: E402
from pyro_vae.training import History, TrainingDiverged, fit  # noqa: E402

__all__ = [
    "VAE",
    "BetaSchedule",
    "History",
    "TrainingDiverged",
    "data",
    "evaluate",
    "fit",
    "likelihoods",
    "make_elbo",
    "priors",
]
