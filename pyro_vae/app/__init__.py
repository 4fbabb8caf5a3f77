"""The application layer: the command line, the run configuration, run directories,
the prior comparison, figures and the diagnose report.

Everything here is built on the probabilistic core (``pyro_vae.model``, ``likelihoods``,
``priors``, ``objectives``, ``training``, ``evaluation``, ``data``, ``diagnostics``), which
never imports from this package.
"""
