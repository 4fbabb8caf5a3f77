"""fit's defaults: the objective's own validation bound (low variance), learning-rate
reduction on plateau (resumed exactly), weight decay, and the settings that control them."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_vae import VAE, TrainConfig, fit
from pyro_vae.app.cli import build_parser, config_from_args
from pyro_vae.errors import ConfigError
from pyro_vae.infer import objectives
from pyro_vae.infer.evaluation import validation_bounds
from pyro_vae.infer.training import HISTORY_COLUMNS, MAX_VALID_SAMPLES, VALID_DRAWS, make_optimizer
from tests.conftest import binary_data


def small_vae(**kwargs) -> VAE:
    kwargs.setdefault("likelihood", "bernoulli")
    return VAE(10, 2, hidden=(16,), **kwargs)


# --------------------------------------------------------------------------- the criterion


def test_each_objective_names_its_own_bound():
    assert objectives.create("elbo").bound == "elbo"
    assert objectives.create("elbo_analytic").bound == "elbo"
    iwae = objectives.create("iwae")
    assert iwae.bound == "iwae" and iwae.validation_samples(16, draws=3) == 16
    assert objectives.create("elbo").validation_samples(16, draws=3) == 3


def fake_bounds(elbo_rises: bool):
    """validation_bounds whose ELBO and IWAE bound move in opposite directions, epoch by epoch."""
    calls = []

    def bounds(vae, data, *, num_samples, seed):
        calls.append(num_samples)
        t = float(len(calls))
        return {"elbo": t if elbo_rises else -t, "iwae": -t if elbo_rises else t}

    return bounds, calls


@pytest.mark.parametrize("loss", ["iwae", "elbo"])
def test_early_stopping_reads_the_objectives_bound_not_the_elbo(monkeypatch, loss):
    # IWAE training may lower the ELBO while its own bound rises: the single-sample ELBO
    # criterion stopped such runs within `patience` epochs of the start.
    bounds, calls = fake_bounds(elbo_rises=False)
    monkeypatch.setattr("pyro_vae.infer.training.validation_bounds", bounds)
    x, valid = binary_data(100), binary_data(40, seed=1)
    history = fit(
        small_vae(), x, valid, epochs=8, batch_size=50, patience=2, loss=loss, num_particles=4, progress=False
    )
    if loss == "iwae":  # the IWAE bound rises every epoch: no early stop, the last epoch is best
        assert len(history) == 8 and not history.stopped_early and history.best_epoch == 8
        assert calls == [4] * 8  # with its K particles
        assert history["valid_bound"] == [float(t) for t in range(1, 9)]
    else:  # the ELBO falls: stopped after `patience` epochs
        assert len(history) == 3 and history.stopped_early and history.best_epoch == 1
        assert history["valid_bound"] == history["valid_elbo"]


def test_the_iwae_criterion_is_the_iwae_bound_of_the_kept_weights():
    x, valid = binary_data(200), binary_data(40, seed=1)
    vae = small_vae()
    history = fit(
        vae, x, valid, epochs=6, batch_size=50, lr=1e-2, loss="iwae", num_particles=5, progress=False
    )
    best = history["valid_bound"][history.best_epoch - 1]
    assert best == max(history["valid_bound"])
    again = validation_bounds(vae, valid, num_samples=5, seed=0)
    assert again["iwae"] == pytest.approx(best, abs=1e-4)
    assert history["valid_elbo"][history.best_epoch - 1] == pytest.approx(again["elbo"], abs=1e-4)


def test_the_criterion_varies_less_than_a_one_draw_elbo():
    torch.manual_seed(0)
    x, valid = binary_data(200), binary_data(40, seed=1)
    vae = small_vae()
    fit(vae, x, epochs=5, batch_size=50, lr=1e-2, progress=False)  # a fixed, partly trained model
    elbo, iwae = objectives.create("elbo"), objectives.create("iwae")

    def spread(fn):
        return float(np.var([fn(seed) for seed in range(30)]))

    one_draw = spread(lambda s: validation_bounds(vae, valid, num_samples=1, seed=s)["elbo"])
    default_draws = min(
        MAX_VALID_SAMPLES, math.ceil(VALID_DRAWS / len(valid))
    )  # fit's rule: 25 for 40 points
    assert default_draws == 25
    many = spread(lambda s: elbo.validation_bound(vae, valid, draws=default_draws, seed=s))
    k8 = spread(lambda s: iwae.validation_bound(vae, valid, num_particles=8, seed=s))
    assert many < one_draw / 5
    assert k8 < one_draw / 2


def test_default_validation_draws_follow_the_size_of_the_validation_data(monkeypatch):
    seen = []

    def bounds(vae, data, *, num_samples, seed):
        seen.append((len(data), num_samples))
        return {"elbo": -1.0, "iwae": -1.0}

    monkeypatch.setattr("pyro_vae.infer.training.validation_bounds", bounds)
    x = binary_data(100)
    for n in (40, 2500, 20000):
        fit(small_vae(), x, binary_data(n, seed=1), epochs=1, batch_size=100, progress=False)
    fit(small_vae(), x, binary_data(40, seed=1), epochs=1, batch_size=100, valid_samples=3, progress=False)
    loader = DataLoader(TensorDataset(binary_data(2500, seed=1)), batch_size=100)
    fit(small_vae(), x, loader, epochs=1, batch_size=100, progress=False)
    # 1000 draws in all (training.VALID_DRAWS), 1 to 32 per point; a loader: 25 batches, 2500 points
    assert seen == [(40, 25), (2500, 1), (20000, 1), (40, 3), (25, 1)]


# --------------------------------------------------------------------------- learning-rate reduction


def test_learning_rate_is_reduced_on_a_plateau(monkeypatch):
    monkeypatch.setattr(
        "pyro_vae.infer.training.validation_bounds", lambda *a, **k: {"elbo": -1.0, "iwae": -1.0}
    )  # never better than the first epoch
    x, valid = binary_data(100), binary_data(40, seed=1)
    history = fit(
        small_vae(), x, valid, epochs=7, lr=1e-2, batch_size=50, lr_patience=2, lr_factor=0.5,
        patience=None, progress=False,
    )  # fmt: skip
    # epoch 1 sets the best; after more than 2 epochs without a better one (2, 3, 4) the rate halves
    assert history["lr"] == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3])


def test_no_reduction_without_validation_data_or_when_off():
    x, valid = binary_data(100), binary_data(40, seed=1)
    assert set(fit(small_vae(), x, epochs=4, lr_patience=None, progress=False)["lr"]) == {1e-3}
    history = fit(small_vae(), x, epochs=4, progress=False)  # the default lr_patience, no valid
    assert set(history["lr"]) == {1e-3} and all(math.isnan(v) for v in history["valid_bound"])
    history = fit(small_vae(), x, valid, epochs=4, lr_patience=None, progress=False)
    assert set(history["lr"]) == {1e-3}
    with pytest.raises(ConfigError, match="lr_patience needs validation data"):
        fit(small_vae(), x, epochs=1, lr_patience=3, progress=False)


def test_resume_restores_the_scheduler_to_the_bit(tmp_path):
    x, valid = binary_data(200), binary_data(40, seed=1)
    settings = dict(batch_size=32, lr=0.05, lr_patience=1, lr_factor=0.3, patience=None, progress=False)
    torch.manual_seed(0)
    whole = small_vae()
    h_whole = fit(whole, x, valid, epochs=16, **settings)
    # the rate was reduced before and after the interruption: the scheduler's state matters
    assert len(set(h_whole["lr"][:12])) > 1 and len(set(h_whole["lr"][12:])) > 1
    torch.manual_seed(0)
    part = small_vae()
    fit(part, x, valid, epochs=12, checkpoint_dir=tmp_path, **settings)
    resumed = small_vae()
    h_resumed = fit(resumed, x, valid, epochs=16, checkpoint_dir=tmp_path, resume=True, **settings)
    assert h_resumed["lr"] == h_whole["lr"]
    assert h_resumed["valid_bound"] == h_whole["valid_bound"]
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k])


# --------------------------------------------------------------------------- weight decay and settings


def test_weight_decay_uses_adamw_and_shrinks_weights():
    p = [torch.nn.Parameter(torch.ones(3))]
    assert type(make_optimizer(p, 1e-3)) is torch.optim.Adam
    opt = make_optimizer(p, 1e-3, weight_decay=0.5)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.5
    x = binary_data(100)
    norms = []
    for wd in (0.0, 5.0):
        torch.manual_seed(0)
        vae = small_vae()
        fit(vae, x, epochs=5, lr=1e-2, weight_decay=wd, progress=False)
        norms.append(sum(float(p.detach().norm()) for p in vae.decoder.parameters()))
    assert norms[1] < norms[0]


def test_new_settings_are_typed_checked_and_on_the_command_line():
    cfg = TrainConfig()
    assert isinstance(cfg.lr_patience, int) and 0 < cfg.lr_factor < 1
    assert cfg.weight_decay >= 0 and cfg.valid_samples is None
    for bad in (dict(lr_factor=1.0), dict(lr_factor=0.0), dict(lr_patience=0), dict(weight_decay=-1.0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="valid_samples"):
        TrainConfig.from_dict({"valid_samples": 2.5})
    args = build_parser().parse_args(
        [
            "train",
            "--lr-patience",
            "0",
            "--lr-factor",
            "0.2",
            "--weight-decay",
            "0.01",
            "--valid-samples",
            "4",
        ]
    )
    train = config_from_args(args).train
    assert (train.lr_patience, train.lr_factor, train.weight_decay, train.valid_samples) == (
        None,
        0.2,
        0.01,
        4,
    )
    assert {"valid_bound", "lr"} <= set(HISTORY_COLUMNS)


def test_the_default_batch_size_gives_a_small_table_ten_steps_per_epoch():
    from pyro_vae.infer.training import BATCH_SIZE, MIN_BATCH_SIZE, TrainConfig, batch_size_for

    cfg = TrainConfig()
    assert cfg.batch_size is None
    assert batch_size_for(cfg, torch.zeros(341, 3)) == 34
    assert batch_size_for(cfg, torch.zeros(90, 3)) == MIN_BATCH_SIZE
    assert batch_size_for(cfg, torch.zeros(50000, 3)) == BATCH_SIZE
    assert batch_size_for(cfg, torch.zeros(2000, 3), processes=2) == 100  # per process under DDP
    assert batch_size_for(cfg.replace(batch_size=7), torch.zeros(341, 3)) == 7
    history = fit(small_vae(), binary_data(200), epochs=1, progress=False)
    assert len(history) == 1  # 200 points: batch 20, ten steps
