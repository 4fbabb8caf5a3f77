"""Run by tests/test_distributed.py under torchrun: DDP training of a small VAE.

Writes the final state dict and the sharded evaluation (process 0) to OUT.
"""

import sys

import pyro
import pyro.distributions as dist
import torch

import pyro_vae
from pyro_vae import distributed


def mean_guide(vae):
    """A noise-free guide (z = encoder mean), so runs can be compared number for number."""

    def guide(x, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            loc, _ = vae.encoder(x)
            pyro.sample("z", dist.Delta(loc).to_event(1))

    return guide


def make_problem(prior: str):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 12, generator=g)
    torch.manual_seed(1)
    vae = pyro_vae.VAE(12, 3, hidden=(16,), likelihood="continuous_bernoulli", prior=prior)
    return x, vae


def train(vae, x, batch_size, distributed_run):
    fit_guide = vae.guide
    vae.guide = mean_guide(vae)
    pyro_vae.fit(
        vae, x, epochs=2, batch_size=batch_size, lr=1e-2, seed=5, progress=False, distributed=distributed_run
    )
    vae.guide = fit_guide


def data_for(likelihood: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(40, 6, generator=g)
    if likelihood == "bernoulli":
        return (u > 0.5).float()
    if likelihood in ("poisson", "negative_binomial"):
        return torch.floor(5 * u)
    if likelihood in ("continuous_bernoulli", "beta"):
        return 0.01 + 0.98 * u
    return 3 * u - 1


def every_choice(out: str) -> None:
    """One short DDP run per likelihood and per prior; all processes must end identical."""
    checked = []
    runs = [(lik, "standard_normal") for lik in pyro_vae.likelihoods.names()]
    runs += [("gaussian", prior) for prior in pyro_vae.priors.names()]
    for likelihood, prior in runs:
        torch.manual_seed(distributed.current().rank)  # different initial weights: DDP must sync them
        vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood=likelihood, prior=prior)
        x = data_for(likelihood)
        pyro_vae.fit(vae, x, x[:10], epochs=2, batch_size=5, lr=1e-2, progress=False, distributed=True)
        flat = torch.cat([p.detach().flatten() for p in vae.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(distributed.current().world_size)]
        torch.distributed.all_gather(gathered, flat)
        assert all(torch.equal(gathered[0], g) for g in gathered), (likelihood, prior)
        checked.append(f"{likelihood}/{prior}")
    if distributed.current().is_main:
        torch.save({"checked": checked}, out)


if __name__ == "__main__":
    out, prior = sys.argv[1], sys.argv[2]
    if prior == "every_choice":
        every_choice(out)
        distributed.exit_process(0)
    x, vae = make_problem(prior)
    train(vae, x, batch_size=8, distributed_run=True)
    result = pyro_vae.evaluate(vae, x, num_samples=400, seed=2)
    if distributed.current().is_main:
        alone = pyro_vae.evaluate(vae, x, num_samples=400, seed=2, distributed=False)  # no peers needed
        torch.save(
            {
                "state": vae.state_dict(),
                "pointwise": result["pointwise"]["log_likelihood"],
                "n": result["num_points"],
                "alone": alone["pointwise"]["log_likelihood"],
            },
            out,
        )
    distributed.exit_process(0)
