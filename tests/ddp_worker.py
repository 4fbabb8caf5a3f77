"""Run by tests/test_distributed.py under torchrun: DDP training of a small VAE.

Writes the final state dict and the sharded evaluation (process 0) to OUT.
"""

import sys

import pyro
import pyro.distributions as dist
import torch

import pyro_vae
from pyro_vae.infer import distributed
from pyro_vae.infer.objectives import ELBOLoss, make_elbo
from pyro_vae.infer.training import TrainConfig, _objective

# z = loc + 1e-15 * eps equals the encoder mean in float32 wherever |loc| > 1e-7, and the
# variance 1e-30 is still a normal float32 (1e-30 ** 2 would underflow to 0 and give NaN)
NOISE_FREE_SCALE = 1e-15


def mean_guide(vae):
    """A noise-free guide (z = encoder mean), so runs can be compared number for number.

    A Normal of scale 1e-15 rather than a ``Delta``: the validation ELBO that ``fit`` scores
    after each epoch reads the guide's location and scale (a Delta has neither), and
    log q(z|x) = -eps**2 / 2 - log(1e-15) - log(2 pi) / 2 does not depend on the weights, so
    the gradients are those of z = loc.
    """

    def guide(x, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            loc, _ = vae.encoder(vae.shaped(x))
            pyro.sample("z", dist.Normal(loc, torch.full_like(loc, NOISE_FREE_SCALE)).to_event(1))

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


# The table likelihoods need options: a categorical of 5 levels; columns of three kinds.
TABLE_SPECS = {
    "categorical": {"name": "categorical", "options": {"num_categories": 5}},
    "columns": {"name": "columns", "options": {"columns": ["gaussian", "bernoulli", "poisson"] * 2}},
}


def data_for(likelihood: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(40, 6, generator=g)
    if likelihood == "columns":
        return torch.stack(
            [torch.randn(40, generator=g), (u[:, 1] > 0.5).float(), torch.floor(5 * u[:, 2])] * 2, 1
        )
    if likelihood == "categorical":
        return torch.floor(5 * u)
    if likelihood == "bernoulli":
        return (u > 0.5).float()
    if likelihood in ("poisson", "negative_binomial"):
        return torch.floor(5 * u)
    if likelihood == "discretized_gaussian":
        return torch.round(10 * u - 5)
    if likelihood in ("continuous_bernoulli", "beta"):
        return 0.01 + 0.98 * u
    return 3 * u - 1


def every_choice(out: str) -> None:
    """One short DDP run per likelihood and per prior; all processes must end identical."""
    checked = []
    runs = [(lik, "standard_normal") for lik in pyro_vae.distributions.likelihoods.names()]
    runs += [("gaussian", prior) for prior in pyro_vae.distributions.priors.names()]
    for likelihood, prior in runs:
        torch.manual_seed(distributed.current().rank)  # different initial weights: DDP must sync them
        vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood=TABLE_SPECS.get(likelihood, likelihood), prior=prior)
        x = data_for(likelihood)
        pyro_vae.fit(vae, x, x[:10], epochs=2, batch_size=5, lr=1e-2, progress=False, distributed=True)
        flat = torch.cat([p.detach().flatten() for p in vae.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(distributed.current().world_size)]
        torch.distributed.all_gather(gathered, flat)
        assert all(torch.equal(gathered[0], g) for g in gathered), (likelihood, prior)
        checked.append(f"{likelihood}/{prior}")
    if distributed.current().is_main:
        torch.save({"checked": checked}, out)


def gradient_problems():
    """(name, 16 data points, a VAE) built identically in every process, for the one-step test."""
    x, vae = make_problem("standard_normal")
    yield "mlp", x[:16], vae
    g = torch.Generator().manual_seed(3)
    images = 0.05 + 0.9 * torch.rand(16, 1, 28, 28, generator=g)
    torch.manual_seed(4)
    yield "conv", images, pyro_vae.VAE((1, 28, 28), 3, network="conv", likelihood="beta")


def flat_gradients(vae) -> torch.Tensor:
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in vae.parameters()]
    )


def local_gradients(vae, x) -> torch.Tensor:
    """The gradient of the objective ``fit`` uses (-ELBO per point, noise-free guide) on ``x`` alone."""
    vae.zero_grad(set_to_none=True)
    ELBOLoss(vae, make_elbo("elbo", 1))(x).backward()
    grads = flat_gradients(vae)
    vae.zero_grad(set_to_none=True)
    return grads


def one_step_gradients(out: str) -> None:
    """Each process: the gradient of its 8 points alone, and the one DDP leaves after a single
    backward through the objective ``fit`` builds (no optimizer step); process 0 saves both."""
    ctx = distributed.setup("cpu")
    result = {}
    for name, x, vae in gradient_problems():
        vae.guide = mean_guide(vae)
        share = torch.tensor_split(x, ctx.world_size)[ctx.rank]
        local = local_gradients(vae, share)
        objective = _objective(vae, TrainConfig(), ctx, torch.device("cpu"))
        objective(share, 1.0).backward()  # DistributedDataParallel reduces the gradients here
        gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
        torch.distributed.all_gather(gathered, local)
        result[name] = {"ddp": flat_gradients(vae), "local": torch.stack(gathered)}
    if ctx.is_main:
        torch.save(result, out)


if __name__ == "__main__":
    out, prior = sys.argv[1], sys.argv[2]
    if prior == "every_choice":
        every_choice(out)
        distributed.exit_process(0)
    if prior == "gradients":
        one_step_gradients(out)
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
