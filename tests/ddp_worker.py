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


if __name__ == "__main__":
    out, prior = sys.argv[1], sys.argv[2]
    x, vae = make_problem(prior)
    train(vae, x, batch_size=8, distributed_run=True)
    result = pyro_vae.evaluate(vae, x, num_samples=400, seed=2)
    if distributed.current().is_main:
        torch.save(
            {
                "state": vae.state_dict(),
                "pointwise": result["pointwise"]["log_likelihood"],
                "n": result["num_points"],
            },
            out,
        )
    distributed.shutdown()
