"""Probability distributions of the model: likelihoods p(x|z), priors p(z), guides q(z|x)."""
