"""pyro_vae: variational autoencoders written as Pyro models, with the loss derived, not hand-written."""

from pyro_vae import ais, data, guides, imputation, likelihoods, networks, priors, synthesis, tables  # noqa: E402
from pyro_vae.evaluation import evaluate  # noqa: E402
from pyro_vae.model import VAE  # noqa: E402
from pyro_vae.objectives import BetaSchedule, make_elbo  # noqa: E402
from pyro_vae.selection import Selection, select  # noqa: E402
from pyro_vae.training import History, TrainConfig, TrainingDiverged, fit  # noqa: E402
from pyro_vae.version import __version__  # noqa: E402

__all__ = [
    "VAE",
    "BetaSchedule",
    "History",
    "Selection",
    "TrainConfig",
    "TrainingDiverged",
    "__version__",
    "ais",
    "data",
    "diagnostics",
    "estimators",
    "evaluate",
    "fit",
    "guides",
    "imputation",
    "likelihoods",
    "make_elbo",
    "networks",
    "priors",
    "select",
    "synthesis",
    "tables",
]


def __getattr__(name: str):
    # pyro_vae.diagnostics needs ArviZ, which takes seconds to import, and pyro_vae.estimators
    # scikit-learn's estimator machinery: loaded on first use.
    if name in ("diagnostics", "estimators"):
        import importlib

        return importlib.import_module(f"pyro_vae.{name}")
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
