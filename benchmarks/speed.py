"""Training speed on binarized MNIST (CPU): pyro_vae.fit against a plain PyTorch loop.

Reproduce (from the repository root, about 5 minutes on 2 cores):

    PYRO_VAE_DATA=/path/to/data python benchmarks/speed.py            # -> benchmarks/results/speed.json
    PYRO_VAE_DATA=/path/to/data python benchmarks/speed.py --quick    # seconds -> speed_quick.json

The same networks (784-300-300-40 Gaussian encoder, 40-300-300-784 Bernoulli decoder, as built
by ``pyro_vae.VAE(784, 40, hidden=(300, 300), likelihood="bernoulli")``) are trained for one
epoch at a time, four ways, at batch sizes 32, 128 and 512:

* ``pyro_vae``: ``pyro_vae.fit(vae, x, epochs=1, batch_size=b, progress=False)``, the wall
  time of the call (its own per-epoch loop time, without the call's set-up, is reported too);
* ``plain``: a hand-written PyTorch loop over the same modules (``vae.encoder``,
  ``vae.decoder``): Bernoulli BCE-with-logits summed plus the analytic Gaussian KL, per data
  point, the same optimizer as fit (``pyro_vae.infer.training.make_optimizer``: Adam with torch's
  fused kernel, lr 1e-3, created per epoch as fit does), the same batch order as fit's loader
  (index slicing of the in-memory tensor), no validation: the lower bound on the cost of one
  epoch, and the denominator of the target ratio;
* ``plain_default_adam``: the same loop with ``torch.optim.Adam(params, lr=1e-3)`` (torch's
  default, non-fused implementation), i.e. the loop as people usually write it;
* ``pyro_vae_compiled`` (batch 128 only; ``--no-compiled`` skips it, ``--quick`` unless
  ``--compiled``): ``fit(..., compile_step=True)``, the replayed step through ``torch.compile``;
  the warm-up round's call compiles (``compile_seconds``: once per process), the timed calls
  reuse the kernels;
* ``pythae``: pythae's ``BaseTrainer.train_step`` (one epoch) on a pythae ``VAE`` with the same
  layer sizes (BCE on sigmoid outputs), when ``import pythae`` works; otherwise recorded as
  not installed. pythae may pin another torch; never install it into the project's
  environment. A throwaway environment that reuses the project's packages works, e.g.
  ``python -m venv /tmp/pythae-venv`` plus a ``.pth`` file adding the project venv's
  site-packages, then ``/tmp/pythae-venv/bin/pip install --no-deps pythae pydantic
  pydantic-core annotated-types typing-inspection imageio`` and running this script with
  ``/tmp/pythae-venv/bin/python``.

Contenders run interleaved (round-robin, order rotated every round, one discarded warm-up
round), repeated ``--repeats`` times; the figures are medians, and the ratios are computed
from medians taken in the same run (the per-round paired ratios are reported as well).
The target is pyro_vae/plain <= 1.10 at batch 128, with the same optimizer on both sides;
pyro_vae/plain_default_adam is reported beside it.

A per-step breakdown (data, forward, ``.item()``, ``zero_grad``, backward, Adam step; pyro_vae
and plain steps alternating) shows where the overhead goes, with the pieces of the Pyro
forward (guide trace, replayed model trace, ELBO bookkeeping), the fixed per-step cost at
batch size 1, autograd graph sizes, per-epoch extras (validation, state copies) and what-if
timings of alternatives (TraceMeanField_ELBO, JitTrace_ELBO, Adam ``foreach``/``fused``).
torch uses 2 threads throughout (``pyro_vae.utils.set_threads``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

log = _common.log
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.data import features_of, make_loader  # noqa: E402
from pyro_vae.infer.evaluation import validation_elbo  # noqa: E402
from pyro_vae.infer.objectives import make_elbo  # noqa: E402
from pyro_vae.infer.replayed_elbo import compiler_problem  # noqa: E402
from pyro_vae.infer.training import make_optimizer  # noqa: E402

NAME = "speed"
INPUT_DIM, LATENT_DIM, HIDDEN = 784, 40, (300, 300)
LR = 1e-3
TARGET_BATCH, TARGET_RATIO = 128, 1.10
FULL_EPOCH = 50000  # binarized MNIST's training split


def fit_optimizer(params) -> torch.optim.Optimizer:
    """The optimizer fit uses (``training.make_optimizer``: fused Adam), so ``plain`` is like for like."""
    return make_optimizer(params, LR)


def default_adam(params) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with its defaults: the optimizer of a loop as usually written."""
    return torch.optim.Adam(params, lr=LR)


def build_vae(seed: int = 0) -> pyro_vae.VAE:
    torch.manual_seed(seed)
    return pyro_vae.VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, likelihood="bernoulli")


# --------------------------------------------------------------------------- the contenders


def plain_loss(encoder, decoder, x: torch.Tensor) -> torch.Tensor:
    """Negative ELBO per data point, by hand: BCE with logits (summed) + analytic KL to N(0, I)."""
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(loc)
    logits = decoder(z).squeeze(-2)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
    return (reconstruction + kl) / x.shape[0]


def pyro_objective(vae: pyro_vae.VAE):
    """The loss fit evaluates per step (its ``ELBOLoss`` when this pyro_vae has one)."""
    elbo = make_elbo("elbo", 1)
    try:
        from pyro_vae.infer.objectives import ELBOLoss
    except ImportError:
        return lambda x, beta=1.0: elbo.differentiable_loss(vae.model, vae.guide, x, beta)
    return ELBOLoss(vae, elbo)


def fit_batch_order(n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The order in which fit's first epoch visits the rows (from fit's own loader)."""
    loader = make_loader(torch.arange(n, dtype=torch.float32)[:, None], batch_size, shuffle=True, seed=seed)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(1)
    return torch.cat([features_of(b)[:, 0] for b in loader]).long()


def plain_epoch(
    vae: pyro_vae.VAE, x: torch.Tensor, batch_size: int, seed: int, optimizer_factory=None
) -> float:
    order = fit_batch_order(x.shape[0], batch_size, seed)
    torch.manual_seed(seed)
    encoder, decoder = vae.encoder, vae.decoder
    start = time.perf_counter()
    optimizer = (optimizer_factory or fit_optimizer)(vae.parameters())
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        xb = x[order[i : i + batch_size]]
        loss = plain_loss(encoder, decoder, xb)
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"plain loop: loss became {value}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += value * xb.shape[0]
    return time.perf_counter() - start


def pyro_vae_epoch(
    vae: pyro_vae.VAE, x: torch.Tensor, batch_size: int, seed: int, compiled: bool = False
) -> tuple[float, float]:
    """Wall time of ``fit(..., epochs=1)`` and fit's own loop time for the epoch; ``compiled``:
    with ``compile_step=True`` (the process's first such call compiles the step)."""
    start = time.perf_counter()
    history = pyro_vae.fit(
        vae,
        x,
        epochs=1,
        batch_size=batch_size,
        lr=LR,
        progress=False,
        seed=seed,
        num_threads=_common.THREADS,
        compile_step=compiled,
    )
    if compiled and any("stays eager" in n for n in history.notes):
        raise RuntimeError(f"compile_step: {history.notes}")
    wall = time.perf_counter() - start
    return wall, history.records[-1]["seconds"]


def pythae_version() -> str | None:
    try:
        import pythae  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pythae")
    except PackageNotFoundError:
        return "unknown version"


def make_pythae_trainer(x: torch.Tensor, batch_size: int, seed: int, workdir: str):
    """A pythae VAE with the same layer sizes and its BaseTrainer, ready for ``train_step``."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    from pyro_vae.nn.networks import mlp

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp(INPUT_DIM, HIDDEN, 2 * LATENT_DIM)

        def forward(self, x):
            mu, log_var = self.net(x.reshape(x.shape[0], -1)).split(LATENT_DIM, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp(LATENT_DIM, HIDDEN, INPUT_DIM)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    for name in list(logging.root.manager.loggerDict):  # pythae's modules set their own levels
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.ERROR)
    torch.manual_seed(seed)
    config = VAEConfig(input_dim=(INPUT_DIM,), latent_dim=LATENT_DIM, reconstruction_loss="bce")
    model = PythaeVAE(config, encoder=Encoder(), decoder=Decoder())
    training_config = BaseTrainerConfig(
        output_dir=workdir,
        per_device_train_batch_size=batch_size,
        learning_rate=LR,
        num_epochs=1,
        no_cuda=True,
        seed=seed,
    )
    dataset = BaseDataset(x, torch.zeros(x.shape[0]))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer = BaseTrainer(model, train_dataset=dataset, training_config=training_config)
        trainer.prepare_training()
    return trainer


def pythae_epoch(trainer, epoch: int) -> float:
    # pythae's progress bar is part of its per-step cost; its text is discarded.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        trainer.train_step(epoch)
        return time.perf_counter() - start


# --------------------------------------------------------------------------- per-epoch timings


def time_epochs(x: torch.Tensor, batch_sizes, repeats: int, use_pythae: bool, log, compiled: bool) -> dict:
    results = {}
    for b in batch_sizes:
        vae_p, vae_q, vae_d, vae_c = build_vae(0), build_vae(0), build_vae(0), build_vae(0)
        loop_seconds: list[float] = []
        compiled_loop_seconds: list[float] = []
        first_compiled: list[float] = []  # the warm-up call's wall time: the compilation's
        counter = {"pyro_vae": 0, "pyro_vae_compiled": 0, "plain": 0, "plain_default_adam": 0, "pythae": 0}

        def run_pyro(b=b, vae_p=vae_p, loop_seconds=loop_seconds, counter=counter):
            counter["pyro_vae"] += 1
            wall, loop = pyro_vae_epoch(vae_p, x, b, seed=counter["pyro_vae"])
            loop_seconds.append(loop)
            return wall

        def run_compiled(
            b=b, vae_c=vae_c, loops=compiled_loop_seconds, first=first_compiled, counter=counter
        ):
            counter["pyro_vae_compiled"] += 1
            wall, loop = pyro_vae_epoch(vae_c, x, b, seed=counter["pyro_vae_compiled"], compiled=True)
            loops.append(loop)
            if not first:
                first.append(wall)
            return wall

        def run_plain(b=b, vae_q=vae_q, counter=counter):
            counter["plain"] += 1
            return plain_epoch(vae_q, x, b, seed=counter["plain"])

        def run_plain_default(b=b, vae_d=vae_d, counter=counter):
            counter["plain_default_adam"] += 1
            return plain_epoch(
                vae_d, x, b, seed=counter["plain_default_adam"], optimizer_factory=default_adam
            )

        contenders = {"pyro_vae": run_pyro, "plain": run_plain, "plain_default_adam": run_plain_default}
        if compiled and b == TARGET_BATCH:  # one compilation: where the target is judged
            contenders["pyro_vae_compiled"] = run_compiled
        workdir = None
        if use_pythae:
            workdir = tempfile.TemporaryDirectory(prefix="pythae-speed-")
            trainer = make_pythae_trainer(x, b, 0, workdir.name)

            def run_pythae(trainer=trainer, counter=counter):
                counter["pythae"] += 1
                return pythae_epoch(trainer, counter["pythae"])

            contenders["pythae"] = run_pythae
        log(f"batch {b}: {repeats} interleaved rounds of {', '.join(contenders)} (+1 warm-up round)")
        load = _common.ForeignLoad()
        times = _common.interleave(contenders, repeats, warmup=1, load=load)
        if workdir is not None:
            workdir.cleanup()
        loop_seconds = loop_seconds[1:]  # the warm-up round's
        scale = FULL_EPOCH / x.shape[0]
        entry = {
            "steps_per_epoch": math.ceil(x.shape[0] / b),
            "pyro_vae_fit_seconds": _common.summary(times["pyro_vae"]),
            "pyro_vae_epoch_loop_seconds": _common.summary(loop_seconds),
            "plain_seconds": _common.summary(times["plain"]),
            "plain_default_adam_seconds": _common.summary(times["plain_default_adam"]),
        }
        med = {k: _common.median(v) for k, v in times.items()}
        entry["pyro_vae_fit_setup_seconds"] = round(med["pyro_vae"] - _common.median(loop_seconds), 4)
        entry["ratio_pyro_vae_over_plain"] = round(med["pyro_vae"] / med["plain"], 4)
        entry["ratio_pyro_vae_over_plain_default_adam"] = round(
            med["pyro_vae"] / med["plain_default_adam"], 4
        )
        entry["ratio_pyro_vae_loop_over_plain"] = round(_common.median(loop_seconds) / med["plain"], 4)
        entry["paired_ratios_pyro_vae_over_plain"] = _common.summary(
            [p / q for p, q in zip(times["pyro_vae"], times["plain"])]
        )
        if "pyro_vae_compiled" in times:
            compiled_loops = compiled_loop_seconds[1:]  # the warm-up round's
            entry["pyro_vae_compiled_fit_seconds"] = _common.summary(times["pyro_vae_compiled"])
            entry["pyro_vae_compiled_epoch_loop_seconds"] = _common.summary(compiled_loops)
            entry["ratio_pyro_vae_compiled_over_plain"] = round(med["pyro_vae_compiled"] / med["plain"], 4)
            entry["ratio_pyro_vae_compiled_loop_over_plain"] = round(
                _common.median(compiled_loops) / med["plain"], 4
            )
            entry["paired_ratios_pyro_vae_compiled_over_plain"] = _common.summary(
                [p / q for p, q in zip(times["pyro_vae_compiled"], times["plain"])]
            )
            # the first compiled fit of the process (warm-up round) compiles; later fits reuse the kernels
            entry["compile_seconds"] = round(first_compiled[0] - med["pyro_vae_compiled"], 2)
        if "pythae" in times:
            entry["pythae_seconds"] = _common.summary(times["pythae"])
            entry["ratio_pythae_over_plain"] = round(med["pythae"] / med["plain"], 4)
        entry["per_50000_image_epoch_seconds"] = {k: round(v * scale, 3) for k, v in med.items()}
        entry["foreign_cpu_fraction"] = load.fraction
        results[str(b)] = entry
        log(
            "  median s/epoch: "
            + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
            + f"; pyro_vae/plain {entry['ratio_pyro_vae_over_plain']:.3f}; other processes' CPU share {load.fraction}"
        )
    return results


# --------------------------------------------------------------------------- per-step breakdown


def _next_batch(state, loader):
    try:
        return next(state["it"])
    except StopIteration:
        state["it"] = iter(loader)
        return next(state["it"])


def step_breakdown(x: torch.Tensor, batch_size: int, steps: int, warmup: int = 20) -> dict:
    """Median milliseconds of each phase of a training step, pyro_vae and plain steps alternating."""
    vae_p, vae_q = build_vae(0), build_vae(0)
    objective = pyro_objective(vae_p)
    opt_p = fit_optimizer(vae_p.parameters())
    opt_q = fit_optimizer(vae_q.parameters())
    loader = make_loader(x, batch_size, shuffle=True, seed=0)
    state = {"it": iter(loader)}
    order = fit_batch_order(x.shape[0], batch_size, 0)
    pos = 0
    phases = {"pyro_vae": defaultdict(list), "plain": defaultdict(list)}
    pc = time.perf_counter
    vae_p.train()
    load = _common.ForeignLoad()
    with pyro.validation_enabled(False), load.measure():
        for s in range(warmup + steps):
            keep = s >= warmup
            # pyro_vae's step, as fit takes it
            t0 = pc()
            xb = features_of(_next_batch(state, loader)).to("cpu", torch.float32, non_blocking=True)
            t1 = pc()
            loss = objective(xb, 1.0)
            t2 = pc()
            loss.item()
            t3 = pc()
            opt_p.zero_grad(set_to_none=True)
            t4 = pc()
            loss.backward()
            t5 = pc()
            opt_p.step()
            t6 = pc()
            if keep:
                for k, v in zip(
                    ("data", "forward", "item", "zero_grad", "backward", "optimizer_step", "total"),
                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0),
                ):
                    phases["pyro_vae"][k].append(v)
            # the plain step
            t0 = pc()
            if pos >= x.shape[0]:
                pos = 0
            xb = x[order[pos : pos + batch_size]]
            pos += batch_size
            t1 = pc()
            loss = plain_loss(vae_q.encoder, vae_q.decoder, xb)
            t2 = pc()
            loss.item()
            t3 = pc()
            opt_q.zero_grad(set_to_none=True)
            t4 = pc()
            loss.backward()
            t5 = pc()
            opt_q.step()
            t6 = pc()
            if keep:
                for k, v in zip(
                    ("data", "forward", "item", "zero_grad", "backward", "optimizer_step", "total"),
                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0),
                ):
                    phases["plain"][k].append(v)
    out = {name: {k: round(1e3 * _common.median(v), 4) for k, v in ph.items()} for name, ph in phases.items()}
    out["difference_pyro_vae_minus_plain"] = {
        k: round(out["pyro_vae"][k] - out["plain"][k], 4) for k in out["plain"]
    }
    out["steps_measured"] = steps
    out["foreign_cpu_fraction"] = load.fraction
    return out


def graph_nodes(t: torch.Tensor) -> int:
    """Number of autograd nodes behind ``t`` (the backward pass visits each once)."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


def forward_anatomy(x: torch.Tensor, batch_size: int, rounds: int) -> dict:
    """Where the Pyro forward's time goes: networks alone, traces, the ELBO's bookkeeping (ms)."""
    vae = build_vae(0)
    xb = x[:batch_size]
    elbo = make_elbo("elbo", 1)
    enc, dec = vae.encoder, vae.decoder

    def networks_only():
        loc, scale = enc(xb)
        dec(loc + scale * torch.randn_like(loc))

    def guide_trace():
        poutine.trace(vae.guide).get_trace(xb, 1.0)

    def both_traces():
        guide = poutine.trace(vae.guide).get_trace(xb, 1.0)
        poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(xb, 1.0)

    def trace_elbo_loss():
        elbo.differentiable_loss(vae.model, vae.guide, xb, 1.0)

    def plain_forward():
        plain_loss(enc, dec, xb)

    replayed = pyro_objective(vae)

    def replayed_loss():
        replayed(xb, 1.0)

    def per_call(fn):
        def run():
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return run

    with pyro.validation_enabled(False):
        times = _common.interleave(
            {
                "networks_only": per_call(networks_only),
                "guide_trace": per_call(guide_trace),
                "guide_and_replayed_model_traces": per_call(both_traces),
                "trace_elbo_differentiable_loss": per_call(trace_elbo_loss),
                "fit_objective_replayed": per_call(replayed_loss),
                "plain_loss": per_call(plain_forward),
            },
            rounds,
            warmup=20,
        )
        med = {k: 1e3 * _common.median(v) for k, v in times.items()}
        pyro_loss = elbo.differentiable_loss(vae.model, vae.guide, xb, 1.0)
        plain = plain_loss(enc, dec, xb)
    return {
        "milliseconds": {k: round(v, 4) for k, v in med.items()},
        "pyro_tracing_overhead_ms": round(med["guide_and_replayed_model_traces"] - med["networks_only"], 4),
        "elbo_bookkeeping_ms": round(
            med["trace_elbo_differentiable_loss"] - med["guide_and_replayed_model_traces"], 4
        ),
        "plain_loss_arithmetic_ms": round(med["plain_loss"] - med["networks_only"], 4),
        "replayed_overhead_ms": round(med["fit_objective_replayed"] - med["networks_only"], 4),
        "autograd_nodes": {"trace_elbo": graph_nodes(pyro_loss), "plain": graph_nodes(plain)},
    }


def fixed_overhead(x: torch.Tensor, rounds: int) -> dict:
    """Forward+backward at batch size 1, where the networks cost least: the per-step fixed cost (ms)."""
    vae_p, vae_q = build_vae(0), build_vae(0)
    xb = x[:1]
    objective = pyro_objective(vae_p)

    def pyro_fb():
        start = time.perf_counter()
        objective(xb, 1.0).backward()
        return time.perf_counter() - start

    def plain_fb():
        start = time.perf_counter()
        plain_loss(vae_q.encoder, vae_q.decoder, xb).backward()
        return time.perf_counter() - start

    with pyro.validation_enabled(False):
        t = _common.interleave({"pyro_vae": pyro_fb, "plain": plain_fb}, rounds, warmup=20)
    med = {k: 1e3 * _common.median(v) for k, v in t.items()}
    return {
        "forward_backward_ms": {k: round(v, 4) for k, v in med.items()},
        "pyro_fixed_cost_per_step_ms": round(med["pyro_vae"] - med["plain"], 4),
    }


def alternatives(x: torch.Tensor, batch_size: int, rounds: int, log) -> dict:
    """What-if: a whole step (forward, backward, Adam) with other Pyro ELBOs, and Adam variants (ms)."""
    xb = x[:batch_size]
    steps = {}

    def step_fn(vae, loss_fn, optimizer):
        def run():
            start = time.perf_counter()
            loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return run

    for name, elbo in (
        ("Trace_ELBO", make_elbo("elbo", 1)),
        ("TraceMeanField_ELBO", make_elbo("elbo_analytic", 1)),
    ):
        vae = build_vae(0)
        steps[name] = step_fn(
            vae,
            lambda vae=vae, elbo=elbo: elbo.differentiable_loss(vae.model, vae.guide, xb, 1.0),
            fit_optimizer(vae.parameters()),
        )
    vae_r = build_vae(0)
    replayed = pyro_objective(vae_r)
    steps["fit's step (Trace_ELBO traced once, replayed)"] = step_fn(
        vae_r, lambda: replayed(xb, 1.0), fit_optimizer(vae_r.parameters())
    )
    notes = {}
    try:
        vae_j = build_vae(0)

        def model(x):
            pyro.module("speed_jit_vae", vae_j)
            vae_j.model(x)

        def guide(x):
            pyro.module("speed_jit_vae", vae_j)
            vae_j.guide(x)

        jit = pyro.infer.JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
        with pyro.validation_enabled(False), contextlib.redirect_stderr(io.StringIO()):
            jit.differentiable_loss(model, guide, xb).backward()  # compiles
        steps["JitTrace_ELBO (pyro.module in model and guide)"] = step_fn(
            vae_j,
            lambda: jit.differentiable_loss(model, guide, xb),
            fit_optimizer(vae_j.parameters()),
        )
    except Exception as e:  # noqa: BLE001 - a what-if; record why it could not run
        notes["JitTrace_ELBO"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    vae_q = build_vae(0)
    steps["plain"] = step_fn(
        vae_q,
        lambda: plain_loss(vae_q.encoder, vae_q.decoder, xb),
        fit_optimizer(vae_q.parameters()),
    )
    vae_a = build_vae(0)
    plain_loss(vae_a.encoder, vae_a.decoder, xb).backward()
    for kind, kwargs in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        try:
            optimizer = torch.optim.Adam(vae_a.parameters(), lr=LR, **kwargs)

            def adam(optimizer=optimizer):
                start = time.perf_counter()
                optimizer.step()
                return time.perf_counter() - start

            steps[f"Adam step only ({kind})"] = adam
        except Exception as e:  # noqa: BLE001
            notes[f"Adam {kind}"] = f"failed: {type(e).__name__}: {e}"
    log(f"  what-if step timings at batch {batch_size} ({rounds} interleaved rounds)")
    with pyro.validation_enabled(False):
        t = _common.interleave(steps, rounds, warmup=10)
    out = {
        "batch_size": batch_size,
        "step_ms": {k: round(1e3 * _common.median(v), 4) for k, v in t.items()},
    }
    plain_ms = out["step_ms"]["plain"]
    out["ratio_over_plain"] = {
        k: round(v / plain_ms, 4) for k, v in out["step_ms"].items() if not k.startswith("Adam")
    }
    if notes:
        out["notes"] = notes
    return out


def vamp_anatomy(x: torch.Tensor, batch_size: int, rounds: int, components: int = 500) -> dict:
    """A training step with the VampPrior against one with N(0, I), and the VampPrior's extra
    work taken apart: the encoder over the pseudo-inputs, forward and backward, and the
    mixture density of the batch's draws, forward and backward."""
    steps = {}
    for prior in ("standard_normal", {"name": "vamp", "options": {"num_components": components}}):
        torch.manual_seed(0)
        vae = pyro_vae.VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, likelihood="bernoulli", prior=prior)
        vae.prior.initialize(x[:components])
        steps[vae.prior.name] = (vae, pyro_objective(vae), fit_optimizer(vae.parameters()))
    batches = [x[i * batch_size : (i + 1) * batch_size] for i in range(max(1, x.shape[0] // batch_size))]

    def step(name):
        vae, objective, optimizer = steps[name]
        counter = iter(range(10**9))

        def run():
            xb = batches[next(counter) % len(batches)]
            start = time.perf_counter()
            loss = objective(xb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return run

    vamp = steps["vamp"][0]
    z = torch.randn(batch_size, LATENT_DIM)

    def encodings():
        start = time.perf_counter()
        loc, scale = vamp.encoder(vamp.prior.pseudo_inputs)
        (loc.sum() + scale.sum()).backward()
        return time.perf_counter() - start

    logits, loc, scale = (t.detach().requires_grad_() for t in vamp.prior.components())

    def density():
        start = time.perf_counter()
        pyro_vae.distributions.priors.DiagonalGaussianMixture(logits, loc, scale).log_prob(z).sum().backward()
        return time.perf_counter() - start

    times = _common.interleave(
        {"standard_step": step("standard_normal"), "vamp_step": step("vamp"),
         "pseudo_input_encodings": encodings, "mixture_density": density},
        rounds, warmup=3,
    )  # fmt: skip
    ms = {k: round(1e3 * _common.median(v), 4) for k, v in times.items()}
    extra = ms["vamp_step"] - ms["standard_step"]
    return {
        "batch_size": batch_size,
        "pseudo_inputs": components,
        "milliseconds": ms,
        "vamp_over_standard": round(ms["vamp_step"] / ms["standard_step"], 3),
        "extra_ms": round(extra, 4),
        "extra_explained_by": {
            "pseudo_input_encodings": round(ms["pseudo_input_encodings"] / extra, 3) if extra > 0 else None,
            "mixture_density": round(ms["mixture_density"] / extra, 3) if extra > 0 else None,
        },
        "note": "the pseudo-inputs' encodings are computed once per step (the model's prior site) and "
        "are the bulk of the extra work: the encoder runs over components + batch rows instead of batch rows",
    }


def epoch_extras(splits, repeats: int, valid_size: int) -> dict:
    """Per-epoch costs outside the steps: fit's validation pass and its state copies."""
    vae = build_vae(0)
    vae.fitted = True
    valid = splits.valid[:valid_size]
    validation = []
    for _ in range(repeats):
        t, _ = _common.timed(lambda: validation_elbo(vae, valid, seed=0))
        validation.append(t)
    copies = []
    for _ in range(max(5, repeats)):
        t, _ = _common.timed(lambda: {k: v.detach().clone() for k, v in vae.state_dict().items()})
        copies.append(t)
    return {
        "validation_elbo_seconds_per_epoch": round(_common.median(validation), 4),
        "validation_points": valid.shape[0],
        "state_dict_copy_ms": round(1e3 * _common.median(copies), 4),
        "note": "fit validates once per epoch only when valid data is given (not in this benchmark's "
        "timed epochs); it copies the state dict once per epoch (last good weights).",
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--batch-sizes", default="32,128,512", help="comma-separated (default 32,128,512)")
    parser.add_argument(
        "--train-size", type=int, default=None, help="training images per timed epoch (default: all 50000)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per batch size (default 5)")
    parser.add_argument("--breakdown-steps", type=int, default=None, help="steps per breakdown (default 300)")
    parser.add_argument("--no-pythae", action="store_true", help="skip pythae even if it is importable")
    parser.add_argument(
        "--compiled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"also time fit(..., compile_step=True) at batch {TARGET_BATCH} (default: on, off with --quick: "
        "compiling takes tens of seconds)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        help="wait up to this many seconds for other processes to leave the CPUs (default 300, --quick 0)",
    )
    args = parser.parse_args(argv)
    data_dir = _common.require_data_dir(args.data_dir, parser)
    quick = args.quick
    train_size = args.train_size or (256 if quick else FULL_EPOCH)
    repeats = args.repeats or (2 if quick else 5)
    breakdown_steps = args.breakdown_steps or (10 if quick else 300)
    micro_rounds = 6 if quick else 300
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    threads = _common.setup_threads()
    quiet = _common.wait_unless_quick(args.wait_idle, quick)
    started = time.perf_counter()
    splits = pyro_vae.data.load_binarized_mnist(data_dir)
    x = splits.train[:train_size].contiguous()
    version = None if args.no_pythae else pythae_version()
    result = {
        "benchmark": NAME,
        "command": _common.command_line("speed.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quiet_machine_check": quiet,
        "quick": quick,
        "settings": {
            "model": "VAE(784, 40, hidden=(300, 300), likelihood='bernoulli'), standard normal prior",
            "train_images_per_timed_epoch": x.shape[0],
            "per_50000_scaling": "per_50000_image_epoch_seconds = median seconds * 50000 / train images"
            if x.shape[0] != FULL_EPOCH
            else "none: the timed epochs are full 50000-image epochs",
            "batch_sizes": batch_sizes,
            "repeats": repeats,
            "warmup_rounds": 1,
            "lr": LR,
            "torch_threads": threads,
            "interleaving": "round-robin, order rotated each round",
            "pyro_vae_timing": "wall time of fit(vae, x, epochs=1, batch_size=b, progress=False) "
            "(set-up included); the epoch loop alone is fit's history 'seconds'",
            "plain_timing": "one epoch of a hand-written loop (BCE-with-logits + analytic KL, fit's optimizer, "
            "same batch order as fit), optimizer created inside the timed region as in fit; "
            "plain_default_adam: the same loop with torch.optim.Adam's default implementation",
        },
        "pythae": version
        if version
        else ("skipped (--no-pythae)" if args.no_pythae else "pythae not installed"),
    }
    if version:
        result["settings"]["pythae_timing"] = (
            "BaseTrainer.train_step(epoch) only (trainer construction, sanity check and saving excluded); "
            "pythae VAE, same layer sizes, sigmoid + BCE, mean loss over the batch, its own per-item "
            "DataLoader and progress bar"
        )
    log(
        f"speed: {x.shape[0]} images per epoch, batch sizes {batch_sizes}, {repeats} rounds, "
        f"{threads} threads; pythae: {result['pythae']}"
    )
    with_compiled = (not quick) if args.compiled is None else args.compiled
    problem = None if with_compiled else "skipped (--no-compiled; --quick's default)"
    problem = problem or compiler_problem(torch.device("cpu"))
    result["compiled_step"] = (
        problem or "fit(..., compile_step=True): the replayed step through torch.compile"
    )
    if problem:
        log(f"compiled step: {problem}")
    result["per_epoch"] = time_epochs(x, batch_sizes, repeats, bool(version), log, compiled=problem is None)
    if str(TARGET_BATCH) in result["per_epoch"]:
        entry = result["per_epoch"][str(TARGET_BATCH)]
        ratio = entry["ratio_pyro_vae_over_plain"]
        result["target"] = {
            "batch_size": TARGET_BATCH,
            "ratio_pyro_vae_over_plain": ratio,
            "max_ratio": TARGET_RATIO,
            "met": ratio <= TARGET_RATIO,
        }
        if "ratio_pyro_vae_compiled_over_plain" in entry:
            compiled = entry["ratio_pyro_vae_compiled_over_plain"]
            result["target"]["ratio_pyro_vae_compiled_over_plain"] = compiled
            result["target"]["met_compiled"] = compiled <= TARGET_RATIO
    _common.write_results(NAME, quick, result, args.results_dir)  # keep what is measured so far

    log(
        f"per-step breakdown, pyro_vae and plain steps alternating ({time.perf_counter() - started:.0f} s so far)"
    )
    result["step_breakdown_ms"] = {}
    for b in batch_sizes:
        bd = step_breakdown(x, b, breakdown_steps)
        per_epoch = result["per_epoch"][str(b)]
        steps = per_epoch["steps_per_epoch"]
        bd["per_step_from_epoch_timings_ms"] = {
            "pyro_vae_fit_loop": round(1e3 * per_epoch["pyro_vae_epoch_loop_seconds"]["median"] / steps, 4),
            "plain": round(1e3 * per_epoch["plain_seconds"]["median"] / steps, 4),
        }
        result["step_breakdown_ms"][str(b)] = bd
        log(
            f"  batch {b}: "
            + ", ".join(f"{k} {v:+.3f}" for k, v in bd["difference_pyro_vae_minus_plain"].items())
        )
    anatomy_batch = TARGET_BATCH if TARGET_BATCH in batch_sizes else batch_sizes[0]
    log(f"forward anatomy, fixed cost, what-if ({time.perf_counter() - started:.0f} s so far)")
    result["pyro_forward_anatomy"] = {
        "batch_size": anatomy_batch,
        **forward_anatomy(x, anatomy_batch, micro_rounds),
    }
    result["fixed_cost_batch_size_1"] = fixed_overhead(x, micro_rounds)
    result["what_if"] = alternatives(x, anatomy_batch, micro_rounds // 2 or 1, log)
    log(f"VampPrior step anatomy ({time.perf_counter() - started:.0f} s so far)")
    result["vamp_anatomy"] = vamp_anatomy(x, 100, micro_rounds // 3 or 2, 50 if quick else 500)
    log(f"per-epoch extras ({time.perf_counter() - started:.0f} s so far)")
    result["per_epoch_extras"] = epoch_extras(
        splits, 1 if quick else 3, 200 if quick else splits.valid.shape[0]
    )
    result["machine"]["torch_threads_at_end"] = torch.get_num_threads()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    path = _common.write_results(NAME, quick, result, args.results_dir)
    print_report(result)
    log(f"wrote {path}")
    return result


def print_report(r: dict) -> None:
    print()
    print(
        f"Training speed, binarized MNIST, {r['settings']['train_images_per_timed_epoch']} images/epoch, ",
        end="",
    )
    print(
        f"{r['machine']['torch_threads']} threads, {r['machine']['processor']}, torch {r['machine']['torch']}"
    )
    print(f"pythae: {r['pythae']}")
    header = (
        f"{'batch':>6} {'pyro_vae fit':>13} {'(loop only)':>12} {'plain':>9} {'plain(Adam)':>12} {'pythae':>9} "
        f"{'pyro/plain':>11} {'paired':>8} {'pyro/plain(Adam)':>17} {'busy':>5}"
    )
    print(
        header
        + "   (median s per epoch; plain(Adam): torch's default Adam; busy: other processes' CPU share)"
    )
    for b, e in r["per_epoch"].items():
        pythae = f"{e['pythae_seconds']['median']:9.3f}" if "pythae_seconds" in e else f"{'-':>9}"
        print(
            f"{b:>6} {e['pyro_vae_fit_seconds']['median']:13.3f} {e['pyro_vae_epoch_loop_seconds']['median']:12.3f} "
            f"{e['plain_seconds']['median']:9.3f} {e['plain_default_adam_seconds']['median']:12.3f} {pythae} "
            f"{e['ratio_pyro_vae_over_plain']:11.3f} {e['paired_ratios_pyro_vae_over_plain']['median']:8.3f} "
            f"{e['ratio_pyro_vae_over_plain_default_adam']:17.3f} {e['foreign_cpu_fraction']}"
        )
    print(f"compiled step: {r.get('compiled_step', 'not measured')}")
    for b, e in r["per_epoch"].items():
        if "pyro_vae_compiled_fit_seconds" in e:
            print(
                f"{b:>6} compiled fit {e['pyro_vae_compiled_fit_seconds']['median']:.3f} s "
                f"(loop {e['pyro_vae_compiled_epoch_loop_seconds']['median']:.3f}), "
                f"compiled/plain {e['ratio_pyro_vae_compiled_over_plain']:.3f} "
                f"(paired {e['paired_ratios_pyro_vae_compiled_over_plain']['median']:.3f}); "
                f"compiling took {e['compile_seconds']:.1f} s once per process"
            )
    busy = [e["foreign_cpu_fraction"] for e in r["per_epoch"].values() if e["foreign_cpu_fraction"]]
    if busy and max(busy) > 0.1:
        print(
            f"WARNING: other processes used up to {max(busy):.0%} of the CPUs during the timings: not reliable"
        )
    if "target" in r:
        t = r["target"]
        print(
            f"target at batch {t['batch_size']}: pyro_vae/plain {t['ratio_pyro_vae_over_plain']:.3f} "
            f"<= {t['max_ratio']}: {'met' if t['met'] else 'MISSED'}"
            + (
                f"; compiled {t['ratio_pyro_vae_compiled_over_plain']:.3f}: "
                f"{'met' if t['met_compiled'] else 'MISSED'}"
                if "met_compiled" in t
                else ""
            )
        )
    print("\nPer-step phases, median ms (pyro_vae | plain | difference)")
    for b, bd in r["step_breakdown_ms"].items():
        print(f"  batch {b}:")
        for k in bd["plain"]:
            print(
                f"    {k:<15} {bd['pyro_vae'][k]:8.3f} | {bd['plain'][k]:8.3f} | "
                f"{bd['difference_pyro_vae_minus_plain'][k]:+8.3f}"
            )
        s = bd["per_step_from_epoch_timings_ms"]
        print(f"    {'(epoch/steps)':<15} {s['pyro_vae_fit_loop']:8.3f} | {s['plain']:8.3f}")
    a = r["pyro_forward_anatomy"]
    print(f"\nPyro forward anatomy at batch {a['batch_size']} (ms): {a['milliseconds']}")
    print(
        f"  tracing overhead {a['pyro_tracing_overhead_ms']:.3f}, ELBO bookkeeping {a['elbo_bookkeeping_ms']:.3f}, "
        f"plain loss arithmetic {a['plain_loss_arithmetic_ms']:.3f}; autograd nodes {a['autograd_nodes']}"
    )
    f = r["fixed_cost_batch_size_1"]
    print(f"Fixed cost per step (batch 1, forward+backward, ms): {f['forward_backward_ms']}")
    w = r["what_if"]
    print(f"What-if, whole step at batch {w['batch_size']} (ms): {w['step_ms']}")
    print(f"  ratios over plain: {w['ratio_over_plain']}")
    if "notes" in w:
        print(f"  notes: {w['notes']}")
    v = r["vamp_anatomy"]
    print(
        f"VampPrior ({v['pseudo_inputs']} pseudo-inputs) at batch {v['batch_size']} (ms): {v['milliseconds']}; "
        f"vamp/standard {v['vamp_over_standard']:.2f}x; share of the extra: {v['extra_explained_by']}"
    )
    x = r["per_epoch_extras"]
    print(
        f"Per epoch outside the steps: validation_elbo on {x['validation_points']} points "
        f"{x['validation_elbo_seconds_per_epoch']:.3f} s, state_dict copy {x['state_dict_copy_ms']:.2f} ms"
    )
    print(f"total wall time {r['wall_seconds']} s")


if __name__ == "__main__":
    main()
