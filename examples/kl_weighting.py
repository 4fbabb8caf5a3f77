"""How should the KL term be weighted? Measured answers; every number in docs/kl_weighting.md comes from here.

    python examples/kl_weighting.py                  # about 10 minutes on 2 CPU cores; rewrites
                                                     # docs/kl_weighting.md, its figures and its JSON
    python examples/kl_weighting.py --quick          # a smoke run (seconds), into a fresh
                                                     # temporary folder (or --out DIR); never docs/

Six questions, one section each (see the page for the discussion):

1. beta through ``poutine.scale`` is exactly reconstruction + beta * KL, and with beta != 1 the
   objective is no longer a lower bound on log p(x);
2. ``MSE averaged over D features + lambda * KL`` is a Gaussian likelihood with fixed
   variance sigma^2 = D * lambda / 2 (same gradients up to a positive factor);
3. on a real-valued table with features of very different scales, learned noise levels beat
   every lambda of a sweep on held-out log p(x);
4. averaging the reconstruction over pixels is beta = D, and collapses the posterior;
5. what swapping the prior can and cannot do;
6. KL warm-up as a schedule on beta.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure
from pyro import poutine

import pyro_vae
from pyro_vae import VAE, evaluate, fit
from pyro_vae.app.plotting import draw_image_grid
from pyro_vae.io import atomic_write_json, atomic_write_text
from pyro_vae.io import save_figure as write_figure
from pyro_vae.utils import available_cpus, set_threads

ROOT = Path(__file__).resolve().parents[1]
PAGE = "kl_weighting.md"
FIGURES = "kl_weighting"  # folder beside the page


@dataclass(frozen=True)
class Budget:
    latent_dim: int
    hidden: tuple[int, ...]
    epochs: int
    eval_samples: int
    batch_size: int = 128
    lr: float = 1e-3

    @classmethod
    def for_run(cls, quick: bool) -> Budget:
        if quick:
            return cls(latent_dim=2, hidden=(16,), epochs=2, eval_samples=20)
        return cls(latent_dim=8, hidden=(128, 128), epochs=150, eval_samples=1000)


def log(message: str) -> None:
    print(message, flush=True)


def train(splits, likelihood, budget: Budget, *, prior="standard_normal", beta: Any = 1.0, seed: int = 0):
    pyro.set_rng_seed(seed)
    vae = VAE(
        splits.num_features, budget.latent_dim, hidden=budget.hidden, likelihood=likelihood, prior=prior
    )
    start = time.perf_counter()
    history = fit(
        vae,
        splits.train,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        beta=beta,
        seed=seed,
        progress=False,
    )
    return vae, history, time.perf_counter() - start


def scores(
    vae: VAE, x: torch.Tensor, budget: Budget, beta: float = 1.0, log_jacobian: float = 0.0
) -> dict[str, float]:
    """Test-set numbers in nats per point; ``log_jacobian`` moves densities back to the raw data's units."""
    m = evaluate(vae, x, num_samples=budget.eval_samples, seed=1)
    return {
        "log_px": m["log_likelihood"] + log_jacobian,
        "log_px_se": m["log_likelihood_se"],
        "elbo": m["elbo"] + log_jacobian,
        "reconstruction": m["reconstruction"] + log_jacobian,
        "kl": m["kl"],
        "beta_objective": m["reconstruction"] + log_jacobian - beta * m["kl"],
        "active_units": m["active_units"],
    }


def fmt(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(fig: Figure, out: Path, name: str) -> str:
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    write_figure(fig, out / FIGURES / name, dpi=110)
    return f"{FIGURES}/{name}"


# --------------------------------------------------------------------------- 1. beta identity


def hand_objective(vae: VAE, x: torch.Tensor, beta: float, seed: int) -> torch.Tensor:
    """-(sum_n log p(x_n|z_n) - beta * sum_n [log q(z_n|x_n) - log p(z_n)]), z drawn as Pyro would."""
    pyro.set_rng_seed(seed)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    z = guide.nodes["z"]["value"]
    recon = model.nodes["x"]["fn"].log_prob(x).sum()
    kl = (guide.nodes["z"]["fn"].log_prob(z) - model.nodes["z"]["fn"].log_prob(z)).sum()
    return -(recon - beta * kl)


def pyro_objective(vae: VAE, x: torch.Tensor, beta: float, seed: int) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    return pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)


def section_beta(digits, budget: Budget, out: Path) -> dict[str, Any]:
    log("[1] beta through poutine.scale")
    vae, _, _ = train(digits, "continuous_bernoulli", budget)
    x = digits.test[:256]
    identity = []
    for beta in (0.0, 0.1, 4.0):
        got, want = pyro_objective(vae, x, beta, seed=3), hand_objective(vae, x, beta, seed=3)
        identity.append(
            {"beta": beta, "pyro": got.item(), "hand": want.item(), "abs_diff": (got - want).abs().item()}
        )
    betas = [0.1, 1.0, 4.0] if budget.epochs < 10 else [0.1, 0.5, 1.0, 2.0, 4.0]
    sweep = []
    for beta in betas:
        model, _, seconds = train(digits, "continuous_bernoulli", budget, beta=beta)
        s = scores(model, digits.test, budget, beta=beta)
        s.update(beta=beta, seconds=seconds, objective_exceeds_log_px=s["beta_objective"] > s["log_px"])
        sweep.append(s)
        log(
            f"    beta {beta:4.1f}: objective {s['beta_objective']:.2f}, ELBO {s['elbo']:.2f}, log p(x) {s['log_px']:.2f}"
        )
    return {"identity": identity, "sweep": sweep}


# --------------------------------------------------------------------------- 2. lambda <-> sigma


def mse_lambda_loss(vae: VAE, x: torch.Tensor, lam: float, seed: int) -> torch.Tensor:
    """The hand-written loss: mean over points of [MSE averaged over D features + lambda * KL]."""
    pyro.set_rng_seed(seed)
    guide = poutine.trace(vae.guide).get_trace(x)
    loc, scale = vae.encoder(x)
    z = guide.nodes["z"]["value"]
    mse = (x - vae.decoder(z).squeeze(-2)).pow(2).mean(-1)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    return (mse + lam * kl).mean()


def negative_elbo(vae: VAE, x: torch.Tensor, seed: int) -> torch.Tensor:
    """-ELBO per point with the analytic KL (Pyro's TraceMeanField_ELBO), same draws of z."""
    pyro.set_rng_seed(seed)
    return pyro_vae.make_elbo("elbo_analytic").differentiable_loss(vae.model, vae.guide, x) / x.shape[0]


def section_lambda(table_data, budget: Budget) -> dict[str, Any]:
    log("[2] MSE + lambda * KL against a fixed-variance Gaussian")
    x = table_data.train[:256]
    d = table_data.num_features
    rows = []
    for lam in (1e-4, 1e-2, 1.0):
        sigma = math.sqrt(d * lam / 2)
        pyro.set_rng_seed(0)
        vae = VAE(
            d,
            budget.latent_dim,
            hidden=budget.hidden,
            likelihood=pyro_vae.distributions.likelihoods.GaussianFixed(sigma),
        )
        params = list(vae.parameters())
        hand = mse_lambda_loss(vae, x, lam, seed=5)
        g_hand = torch.cat([g.flatten() for g in torch.autograd.grad(hand, params)])
        elbo = negative_elbo(vae, x, seed=5)
        g_elbo = torch.cat([g.flatten() for g in torch.autograd.grad(elbo, params)])
        factor = d / (2 * sigma**2)
        rel = ((g_elbo - factor * g_hand).norm() / g_elbo.norm()).item()
        constant = elbo.item() - factor * hand.item()
        rows.append(
            {
                "lambda": lam,
                "sigma": sigma,
                "factor": factor,
                "grad_relative_difference": rel,
                "loss_offset": constant,
                "expected_offset": 0.5 * d * math.log(2 * math.pi * sigma**2),
            }
        )
        log(f"    lambda {lam:g} -> sigma {sigma:.4g}: relative gradient difference {rel:.1e}")
    return {"num_features": d, "rows": rows}


# --------------------------------------------------------------------------- 3. learned sigma on a table


def make_table(n: int, seed: int = 0) -> pyro_vae.data.DataSplits:
    """Twelve real-valued features of a two-dimensional latent cause, scales from 0.1 to 30.

    x_d = s_d * (tanh(a_d . u + b_d) + e_d * eps) + c_d, u ~ N(0, I_2): the features differ in
    scale (s_d, log-spaced), offset (c_d) and noise level (e_d, from 2% to 50%).
    """
    rng = np.random.default_rng(seed)
    d = 12
    u = rng.standard_normal((n, 2))
    a, b = rng.normal(0, 1.5, (2, d)), rng.normal(0, 0.5, d)
    scales = 10 ** np.linspace(-1, 1.5, d)
    noise = rng.permutation(np.linspace(0.02, 0.5, d))
    offsets = rng.normal(0, 3, d) * scales
    x = scales * (np.tanh(u @ a + b) + noise * rng.standard_normal((n, d))) + offsets
    # Standardized with the training split's statistics (the usual first step); densities are
    # reported in the raw units through the map's Jacobian.
    return pyro_vae.data.load_array(
        x.astype(np.float32), name="latent-cause table", standardize=True, seed=seed
    )


def section_learned_sigma(table_data, budget: Budget, quick: bool) -> dict[str, Any]:
    log("[3] learned noise levels against a lambda sweep")
    d = table_data.num_features
    jac = table_data.preprocessing.log_abs_det_jacobian(d)
    sigmas = [0.1, 3.0] if quick else [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]  # in standardized units
    rows = []
    for sigma in sigmas:
        lam = 2 * sigma**2 / d
        vae, _, seconds = train(table_data, pyro_vae.distributions.likelihoods.GaussianFixed(sigma), budget)
        s = scores(vae, table_data.test, budget, log_jacobian=jac)
        rows.append(
            {
                "model": f"MSE + {lam:.3g} * KL",
                "likelihood": "gaussian_fixed",
                "sigma": sigma,
                "lambda": lam,
                **s,
            }
        )
        log(f"    lambda {lam:.3g} (sigma {sigma:g}): test log p(x) {s['log_px']:.2f}")
    for name in ("gaussian_optimal", "gaussian_shared", "gaussian"):
        vae, _, seconds = train(table_data, name, budget)
        s = scores(vae, table_data.test, budget, log_jacobian=jac)
        learned = None
        if name == "gaussian_shared":
            learned = vae.likelihood.scale.tolist()
        elif name == "gaussian_optimal":
            learned = float(vae.likelihood.scale)
        rows.append({"model": f"learned sigma ({name})", "likelihood": name, "learned_sigma": learned, **s})
        log(f"    {name}: test log p(x) {s['log_px']:.2f}")
    fixed_best = max(r["log_px"] for r in rows if r["likelihood"] == "gaussian_fixed")
    return {
        "rows": rows,
        "best_fixed_log_px": fixed_best,
        "feature_scales": list(table_data.preprocessing.std),
    }


# --------------------------------------------------------------------------- 4. averaging over pixels


def reconstruction_spread(vae: VAE, x: torch.Tensor) -> float:
    """Mean distance of reconstructions to their average, relative to the inputs' (1 = as varied as the data)."""
    with torch.no_grad():
        rec = vae.reconstruct(x)
    return _spread(rec) / _spread(x)


def _spread(v: torch.Tensor) -> float:
    return (v - v.mean(0)).norm(dim=1).mean().item()


def section_averaging(digits, budget: Budget, out: Path) -> dict[str, Any]:
    log("[4] averaging the reconstruction over pixels")
    d = digits.num_features
    vae, _, _ = train(digits, "continuous_bernoulli", budget)
    x = digits.test[:256]
    # Averaged loss: mean over points of [ -(1/D) sum_d log p(x_d|z) + KL ] with the same z.
    pyro.set_rng_seed(7)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    z = guide.nodes["z"]["value"]
    recon = model.nodes["x"]["fn"].log_prob(x)
    kl = guide.nodes["z"]["fn"].log_prob(z) - model.nodes["z"]["fn"].log_prob(z)
    averaged = (-recon / d + kl).sum()
    as_beta = pyro_objective(vae, x, float(d), seed=7) / d
    identity = {
        "averaged": averaged.item(),
        "beta_D_over_D": as_beta.item(),
        "abs_diff": (averaged - as_beta).abs().item(),
    }

    runs = {}
    for label, beta in (("summed (beta = 1)", 1.0), (f"averaged (beta = D = {d})", float(d))):
        model, _, seconds = train(digits, "continuous_bernoulli", budget, beta=beta)
        s = scores(model, digits.test, budget, beta=beta)
        s.update(beta=beta, seconds=seconds, reconstruction_spread=reconstruction_spread(model, digits.test))
        runs[label] = (model, s)
        log(
            f"    {label}: active units {s['active_units']}, KL {s['kl']:.2f}, spread {s['reconstruction_spread']:.2f}"
        )
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    shown = digits.test[:16]
    panels = [("inputs", shown)] + [(label, m.reconstruct(shown).detach()) for label, (m, _) in runs.items()]
    for ax, (title, imgs) in zip(axes, panels):
        draw_image_grid(ax, imgs.numpy(), digits.image_shape, vmin=0, vmax=1)  # one scale: blur shows as grey
        ax.set_title(title, fontsize=9)
    figure = save_figure(fig, out, "averaged_vs_summed.png")
    return {
        "num_features": d,
        "identity": identity,
        "runs": {k: s for k, (_, s) in runs.items()},
        "figure": figure,
    }


# --------------------------------------------------------------------------- 5. prior swaps


def kl_normal(mu: torch.Tensor, sigma: torch.Tensor, s: float) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, s^2)) per dimension."""
    return torch.log(s / sigma) + (sigma**2 + mu**2) / (2 * s**2) - 0.5


def section_priors(digits, budget: Budget, out: Path, quick: bool) -> dict[str, Any]:
    log("[5] what a prior swap can and cannot do")
    # Term by term, for a few posteriors q = N(mu, sigma^2) and lambda = 4: the tempered prior
    # N(0, 1/lambda) matches the quadratic term of lambda * KL(q || N(0,1)) but not its entropy term.
    lam = 4.0
    s = 1 / math.sqrt(lam)
    cases = [(0.0, 1.0), (0.0, 0.1), (2.0, 0.5), (-1.0, 0.05)]
    terms = []
    for mu, sigma in cases:
        m, sg = torch.tensor(mu), torch.tensor(sigma)
        weighted = lam * kl_normal(m, sg, 1.0)
        swapped = kl_normal(m, sg, s)
        entropy = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
        terms.append(
            {
                "mu": mu,
                "sigma": sigma,
                "lambda_kl_standard": weighted.item(),
                "kl_tempered_prior": swapped.item(),
                "difference": (weighted - swapped).item(),
                # (1 - lambda) H(q) - log Z_lambda, with log Z_lambda = (1 - lambda)/2 log(2 pi) + log s
                "predicted_difference": (1 - lam) * entropy
                - 0.5 * (1 - lam) * math.log(2 * math.pi)
                - math.log(s),
            }
        )
    # Learned priors: the same networks and budget, four priors.
    names = ["standard_normal", "mixture"] if quick else ["standard_normal", "mixture", "vamp", "flow"]
    learned = []
    for name in names:
        vae, _, seconds = train(digits, "continuous_bernoulli", budget, prior=name)
        sc = scores(vae, digits.test, budget)
        sc.update(prior=name, seconds=seconds, bound_holds=sc["elbo"] <= sc["log_px"] + 3 * sc["log_px_se"])
        learned.append(sc)
        log(f"    prior {name}: KL {sc['kl']:.2f}, ELBO {sc['elbo']:.2f}, log p(x) {sc['log_px']:.2f}")
    return {"lambda": lam, "tempered_scale": s, "terms": terms, "learned": learned}


# --------------------------------------------------------------------------- 6. warm-up


def section_warmup(digits, budget: Budget, out: Path) -> dict[str, Any]:
    log("[6] KL warm-up")
    warm = max(1, budget.epochs // 3)
    rows = []
    curves = {}
    for label, beta in (("no warm-up", 1.0), (f"linear warm-up over {warm} epochs", {"warmup_epochs": warm})):
        vae, history, seconds = train(digits, "continuous_bernoulli", budget, beta=beta)
        s = scores(vae, digits.test, budget)
        s.update(schedule=label, final_beta=history["beta"][-1], seconds=seconds)
        rows.append(s)
        curves[label] = (history["epoch"], history["train_loss"], history["beta"])
        log(
            f"    {label}: final beta {s['final_beta']}, log p(x) {s['log_px']:.2f}, active units {s['active_units']}"
        )
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    for label, (epochs, loss, beta) in curves.items():
        ax.plot(epochs, loss, label=label)
        bx.plot(epochs, beta, label=label)
    ax.set(xlabel="epoch", ylabel="training objective (nats per point)", yscale="symlog")
    bx.set(xlabel="epoch", ylabel="beta")
    ax.legend(fontsize=8)
    figure = save_figure(fig, out, "warmup.png")
    return {"warmup_epochs": warm, "rows": rows, "figure": figure}


# --------------------------------------------------------------------------- the page


def write_page(r: dict[str, Any], out: Path, command: str) -> None:
    b = r["budget"]
    s1, s2, s3, s4, s5, s6 = (
        r[k] for k in ("beta", "lambda", "learned_sigma", "averaging", "priors", "warmup")
    )
    beta_rows = [
        [
            fmt(s["beta"], 1),
            fmt(s["beta_objective"]),
            fmt(s["elbo"]),
            f"{fmt(s['log_px'])} ± {fmt(s['log_px_se'])}",
            fmt(s["kl"]),
            s["active_units"],
            "**yes**" if s["objective_exceeds_log_px"] else "no",
        ]
        for s in s1["sweep"]
    ]
    lam_rows = [
        [
            f"{x['lambda']:g}",
            f"{x['sigma']:.4g}",
            f"{x['factor']:.4g}",
            f"{x['grad_relative_difference']:.1e}",
            f"{x['loss_offset']:.4f}",
            f"{x['expected_offset']:.4f}",
        ]
        for x in s2["rows"]
    ]
    sig_rows = [
        [
            x["model"],
            f"{x['sigma']:g}" if "sigma" in x else "learned",
            f"{fmt(x['log_px'])} ± {fmt(x['log_px_se'])}",
            fmt(x["elbo"]),
            fmt(x["kl"]),
            x["active_units"],
        ]
        for x in s3["rows"]
    ]
    avg_rows = [
        [
            k,
            fmt(s["kl"]),
            s["active_units"],
            fmt(s["reconstruction_spread"]),
            f"{fmt(s['log_px'])} ± {fmt(s['log_px_se'])}",
        ]
        for k, s in s4["runs"].items()
    ]
    term_rows = [
        [
            t["mu"],
            t["sigma"],
            fmt(t["lambda_kl_standard"], 3),
            fmt(t["kl_tempered_prior"], 3),
            fmt(t["difference"], 3),
            fmt(t["predicted_difference"], 3),
        ]
        for t in s5["terms"]
    ]
    prior_rows = [
        [
            x["prior"],
            fmt(x["kl"]),
            fmt(x["reconstruction"]),
            fmt(x["elbo"]),
            f"{fmt(x['log_px'])} ± {fmt(x['log_px_se'])}",
            x["active_units"],
        ]
        for x in s5["learned"]
    ]
    warm_rows = [
        [
            x["schedule"],
            x["final_beta"],
            fmt(x["kl"]),
            fmt(x["elbo"]),
            f"{fmt(x['log_px'])} ± {fmt(x['log_px_se'])}",
            x["active_units"],
        ]
        for x in s6["rows"]
    ]
    learned3 = [x for x in s3["rows"] if x["likelihood"] != "gaussian_fixed"]
    fixed3 = [x for x in s3["rows"] if x["likelihood"] == "gaussian_fixed"]
    best_fixed = max(fixed3, key=lambda x: x["log_px"])
    winners = [x for x in learned3 if x["log_px"] > best_fixed["log_px"]]
    losers = [x for x in learned3 if x["log_px"] <= best_fixed["log_px"]]
    verdict3 = (
        (
            ", ".join(f"`{x['likelihood']}` ({fmt(x['log_px'])})" for x in winners)
            + (" beat" if len(winners) > 1 else " beats")
            if winners
            else "No learned sigma beats"
        )
        + f" the best lambda of the sweep ({fmt(best_fixed['log_px'])} nats at sigma = {best_fixed['sigma']:g}, lambda = {best_fixed['lambda']:.3g}), with no tuning"
        + (
            "; "
            + ", ".join(
                f"`{x['likelihood']}` ({fmt(x['log_px'])}, {fmt(best_fixed['log_px'] - x['log_px'])} nats short)"
                for x in losers
            )
            + (" do not" if len(losers) > 1 else " does not")
            if losers
            else ""
        )
        + "."
    )
    sweep1 = s1["sweep"]
    elbo_rows = (
        "in every row"
        if all(x["elbo"] <= x["log_px"] for x in sweep1)
        else "in all rows but those within Monte Carlo error"
    )
    n_small = sum(x["beta"] < 1 for x in sweep1)
    n_exceed = sum(bool(x["objective_exceeds_log_px"]) for x in sweep1 if x["beta"] < 1)
    n_large = sum(x["beta"] > 1 for x in sweep1)
    n_below = sum(x["beta_objective"] <= x["elbo"] for x in sweep1 if x["beta"] > 1)
    best_beta = max(sweep1, key=lambda x: x["log_px"])
    std5 = next((x for x in s5["learned"] if x["prior"] == "standard_normal"), None)
    prior_verdict = ""
    if std5 is not None:
        lower_kl = [
            x["prior"] for x in s5["learned"] if x["prior"] != "standard_normal" and x["kl"] < std5["kl"]
        ]
        better = [
            x["prior"]
            for x in s5["learned"]
            if x["prior"] != "standard_normal" and x["log_px"] > std5["log_px"]
        ]
        prior_verdict = (
            f"Against the standard normal prior: a lower KL with {', '.join(lower_kl) or 'none of the learned priors'},"
            f" a higher test log p(x) with {', '.join(better) or 'none of them'}, at this budget."
        )
    bound5 = (
        "ELBO <= log p(x) in every row" if all(x["bound_holds"] for x in s5["learned"]) else "see the rows"
    )
    warm_delta = s6["rows"][1]["log_px"] - s6["rows"][0]["log_px"]
    au_delta = s6["rows"][1]["active_units"] - s6["rows"][0]["active_units"]
    d4 = s4["num_features"]
    lam5 = s5["lambda"]
    text = f"""# How should I weight the KL term?

Every number on this page was produced by `{command}`
({r["date"]}, {r["machine"]}; {r["seconds"]:.0f} s). Networks: encoder and decoder MLPs with hidden
layers {list(b["hidden"])}, latent dimension {b["latent_dim"]}, Adam (lr {b["lr"]}), batch {b["batch_size"]},
{b["epochs"]} epochs; test log p(x) by importance sampling with K = {b["eval_samples"]} (± one standard
error over test points). Images: the bundled 8x8 digits (D = {d4}, dequantized grey levels in (0, 1),
continuous Bernoulli likelihood). Raw numbers: [`{FIGURES}/results.json`]({FIGURES}/results.json).

**Short answers.** A weight in front of the KL changes the model you fit: with beta < 1 it is
not a bound on log p(x) any more (section 1). `MSE + lambda * KL` *is* a Gaussian VAE whose noise
level sigma^2 = D lambda / 2 you fixed by hand (section 2), so learn sigma instead (section 3).
Averaging the reconstruction over pixels is beta = D and switches latent dimensions off
(section 4). To change what the KL charges for while keeping a valid bound, change the prior
(section 5); no prior reproduces lambda * KL exactly.

## 1. beta through `poutine.scale` is reconstruction + beta * KL, and no longer a bound

`VAE.model` and `VAE.guide` wrap the latent site in `poutine.scale(scale=beta)`; Pyro's
`Trace_ELBO` then returns exactly `-(E_q log p(x|z) - beta * (log q(z|x) - log p(z)))`. On 256
test images, with the same draws of z, Pyro's loss and the hand-written one differ by:

{table(["beta", "Pyro Trace_ELBO", "hand-written", "abs. difference"], [[x["beta"], fmt(x["pyro"], 4), fmt(x["hand"], 4), f"{x['abs_diff']:.1e}"] for x in s1["identity"]])}

(beta = 0 uses `poutine.mask`: Pyro refuses a scale of 0.) Training with each beta and scoring
the test set (nats per image):

{table(["beta", "beta-objective", "ELBO (beta = 1)", "log p(x)", "KL", "active units", "objective > log p(x)?"], beta_rows)}

The ELBO (beta = 1) stays below log p(x) {elbo_rows}.
With beta < 1 the training objective is not a bound: it exceeds the model's own log-likelihood
in {n_exceed} of the {n_small} rows with beta < 1, so it no longer measures how well the model explains
the data, and maximising it is not maximum likelihood. beta > 1 gives a bound, but a looser one
than the ELBO (its objective is below the ELBO in {n_below} of the {n_large} rows with beta > 1).
The best test log p(x) here comes with beta = {best_beta["beta"]:g}. An explicit beta is legitimate when
you want the trade it makes (rate control, disentanglement); say so, and report log p(x) or
the beta = 1 ELBO beside it.

## 2. `MSE + lambda * KL` is a Gaussian likelihood with sigma^2 = D * lambda / 2

For a Gaussian likelihood with a fixed sigma,
`-ELBO = (1 / 2 sigma^2) sum_d (x_d - mu_d)^2 + KL + (D/2) log(2 pi sigma^2)`
`= (D / 2 sigma^2) [MSE + (2 sigma^2 / D) KL] + const`. So minimising `MSE + lambda * KL` (MSE
averaged over the D = {s2["num_features"]} features) is maximising this ELBO with
sigma^2 = D lambda / 2; the gradients agree up to the factor D / (2 sigma^2). Checked on one batch
(`likelihoods.GaussianFixed(sigma)`, Pyro's `TraceMeanField_ELBO`, same draws of z):

{table(["lambda", "sigma = sqrt(D lambda / 2)", "factor D / 2 sigma^2", "relative gradient difference", "-ELBO - factor x loss", "(D/2) log 2 pi sigma^2"], lam_rows)}

A hand-tuned lambda is a hand-tuned noise level: `lambda = 1e-4` with D = 784 says the pixels
carry noise of standard deviation sqrt(784e-4 / 2) = {math.sqrt(784e-4 / 2):.3f} (in the data's units), whatever the data.

## 3. Learn sigma instead of sweeping lambda

A table of {len(s3["feature_scales"])} real-valued features driven by a two-dimensional latent cause, with
standard deviations from {min(s3["feature_scales"]):.2g} to {max(s3["feature_scales"]):.3g} and noise levels from 2% to
50% of the signal (`make_table` in the script; {table_size(r)}). The features are standardized with
the training split's statistics (`load_array(..., standardize=True)`), so sigma and lambda below
are in standardized units; log p(x) is reported in the raw units through the standardization's
Jacobian (nats per row, higher is better):

{table(["objective", "sigma", "test log p(x)", "ELBO", "KL", "active units"], sig_rows)}

{verdict3}
Even after standardization the features differ in how much of them the latent cause explains:
a single sigma (every `gaussian_fixed` row, and `gaussian_optimal`, the sigma-VAE's batch-optimal
scale) must serve all of them, while `gaussian_shared` learns one sigma per feature and `gaussian`
a sigma(z) per feature and code. `gaussian_optimal` sets its single sigma from the data at
every step, so it lands near the best lambda of a sweep without running one.

## 4. Averaging over pixels is beta = D

`mean_d(-log p(x_d|z)) + KL = (1/D) [-sum_d log p(x_d|z) + D * KL]`: the averaged loss is the
beta = D objective divided by D. On one batch, averaged loss {fmt(s4["identity"]["averaged"], 4)} against beta = D
objective / D {fmt(s4["identity"]["beta_D_over_D"], 4)} (difference {s4["identity"]["abs_diff"]:.1e}). With D = {d4} that is a KL
weight of {d4}; with 784 MNIST pixels, 784. Trained both ways:

{table(["reconstruction term", "KL", "active units", "reconstruction spread", "test log p(x)"], avg_rows)}

"Reconstruction spread" is the mean distance of the reconstructions from their average,
relative to the same for the inputs: near 0, every image is reconstructed as the same blur.

![inputs, summed and averaged reconstructions]({s4["figure"]})

## 5. What a prior swap can and cannot do

Per latent dimension, `KL(N(mu, sigma^2) || N(0, s^2)) = log(s / sigma) + (sigma^2 + mu^2) / 2 s^2 - 1/2`.
With s^2 = 1 / lambda the quadratic term equals lambda times that of `KL(q || N(0, 1))`, but the
entropy term `-log sigma` keeps its weight 1. In general
`lambda KL(q || p) = KL(q || p_lambda) + (1 - lambda) H(q) - log Z_lambda` with
`p_lambda = p^lambda / Z_lambda`, so **no prior p' gives KL(q || p') = lambda KL(q || p) for all q
unless lambda = 1**: the difference moves with the posterior's entropy. For lambda = {lam5:g}
(p' = N(0, {s5["tempered_scale"]:.2f}^2)):

{table(["mu", "sigma", "lambda KL(q ‖ N(0,1))", "KL(q ‖ N(0, 1/lambda))", "difference", "(1 - lambda) H(q) - log Z_lambda"], term_rows)}

What a prior swap can do is change what the KL charges for *inside* a valid bound: a learned
prior (mixture, VampPrior, flow) moves towards the aggregate posterior, and with every prior the
ELBO is still a lower bound on log p(x) ({bound5}). Same networks and budget:

{table(["prior", "KL", "reconstruction", "ELBO", "test log p(x)", "active units"], prior_rows)}

{prior_verdict} A richer prior is a better model of the codes, not a discount on the KL: a model
may spend the freedom on more active units and a higher KL with a better reconstruction. Every
prior side by side: [prior_comparison/comparison.md](prior_comparison/comparison.md).

## 6. KL warm-up

A warm-up is a schedule on beta (`fit(..., beta={{"warmup_epochs": N}})`, `BetaSchedule`):
beta rises linearly from 0 to 1, so early training is an autoencoder that learns to use the
code before it pays for it. It ends at beta = 1, so the final model is fitted to the ELBO and
its numbers are bounds like any other:

{table(["schedule", "beta at the end", "KL", "ELBO", "test log p(x)", "active units"], warm_rows)}

Here the warm-up changed the test log p(x) by {warm_delta:+.2f} nats and the active units by {au_delta:+d}.
Warm-up matters most where the KL would otherwise switch latent dimensions off early (deep or
autoregressive decoders); it changes the path, not the objective at the end.

![training objective and beta per epoch]({s6["figure"]})
"""
    atomic_write_text(out / PAGE, text)


def table_size(r: dict[str, Any]) -> str:
    n = r["table_rows"]
    return f"{n['train']} training, {n['valid']} validation and {n['test']} test rows"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets; numbers meaningless")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the page (default: docs/ for the full run, a fresh temporary folder with --quick)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    args = parser.parse_args(argv)
    docs = ROOT / "docs"
    if args.quick and args.out is not None and args.out.resolve() == docs.resolve():
        parser.error("--quick never writes the committed docs/: give another --out")
    if args.out is not None:
        out = args.out
    elif args.quick:  # a smoke run's numbers are meaningless: never over the committed page
        out = Path(tempfile.mkdtemp(prefix="kl_weighting_quick_"))
    else:
        out = docs
    out.mkdir(parents=True, exist_ok=True)
    log(f"writing {out / PAGE} and {out / FIGURES}/")
    budget = Budget.for_run(args.quick)
    set_threads(args.threads)
    start = time.perf_counter()
    digits = pyro_vae.data.load_digits(dequantize=True)
    table_data = make_table(600 if args.quick else 3000)
    results: dict[str, Any] = {
        "command": shlex.join(
            ["python", "examples/kl_weighting.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{available_cpus()} CPU cores, torch {torch.__version__}",
        "budget": {**budget.__dict__, "hidden": list(budget.hidden)},
        "table_rows": {k: int(getattr(table_data, k).shape[0]) for k in ("train", "valid", "test")},
    }
    results["beta"] = section_beta(digits, budget, out)
    results["lambda"] = section_lambda(table_data, budget)
    results["learned_sigma"] = section_learned_sigma(table_data, budget, args.quick)
    results["averaging"] = section_averaging(digits, budget, out)
    results["priors"] = section_priors(digits, budget, out, args.quick)
    results["warmup"] = section_warmup(digits, budget, out)
    results["seconds"] = time.perf_counter() - start
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / FIGURES / "results.json", results)
    write_page(results, out, results["command"])
    log(f"wrote {out / PAGE}, {out / FIGURES}/ ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
