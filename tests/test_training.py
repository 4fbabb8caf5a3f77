"""fit(): inputs, determinism, schedules, early stopping, checkpoints and divergence."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_vae import VAE, BetaSchedule, TrainConfig, TrainingDiverged, fit
from pyro_vae.errors import ConfigError
from pyro_vae.infer import replayed_elbo as step_module
from pyro_vae.infer.evaluation import validation_elbo
from pyro_vae.infer.replayed_elbo import ReplayedELBO
from pyro_vae.infer.training import NOISE_WINDOW, TRAINING_STATE_FILE, EarlyStopping, make_optimizer
from tests.conftest import binary_data


def small_vae(**kwargs) -> VAE:
    kwargs.setdefault("likelihood", "bernoulli")
    return VAE(10, 2, hidden=(16,), **kwargs)


def test_training_improves_the_elbo():
    x, valid = binary_data(400), binary_data(100, seed=1)
    vae = small_vae()
    before = validation_elbo(vae, valid)
    history = fit(vae, x, valid, epochs=15, batch_size=50, lr=1e-2, progress=False)
    assert len(history) == 15 and history.likelihood == "bernoulli"
    assert history["valid_elbo"][-1] > before + 1.0
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(s > 0 for s in history["seconds"])


def test_same_seed_same_weights_different_seed_different_weights():
    x = binary_data(200)
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(123)  # identical initial weights
        vae = small_vae()
        fit(vae, x, epochs=3, batch_size=32, seed=seed, progress=False)
        states.append(vae.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_accepts_numpy_dataset_and_dataloader():
    x = binary_data(120)
    labels = torch.arange(120) % 3
    for data in (x.numpy(), TensorDataset(x, labels), DataLoader(TensorDataset(x, labels), batch_size=40)):
        vae = VAE(10, 2, hidden=(8,))  # likelihood chosen from the data
        history = fit(vae, data, epochs=2, batch_size=40, progress=False)
        assert history.likelihood == "bernoulli"
        assert np.isfinite(history["train_loss"]).all()


def test_bad_training_arguments():
    x = binary_data(20)
    vae = small_vae()
    with pytest.raises(ValueError, match="epochs"):
        fit(vae, x, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        fit(vae, x, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match="validation data"):
        fit(vae, x, patience=3, progress=False)
    with pytest.raises(ValueError, match="train.loss must be one of"):
        fit(vae, x, loss="mse", progress=False)
    with pytest.raises(ValueError, match="continuous_bernoulli"):
        fit(vae, torch.rand(20, 10), progress=False)
    with pytest.raises(ValueError, match=r"shape \(n, 10\)"):
        fit(vae, torch.zeros(20, 9), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fit(vae, x, torch.full((3, 10), float("nan")), progress=False)


def test_beta_schedule_is_recorded_and_warms_up():
    x = binary_data(100)
    history = fit(small_vae(), x, epochs=4, batch_size=100, beta={"warmup_epochs": 2}, progress=False)
    # One step per epoch: beta is evaluated at the start of each epoch.
    assert history["beta"] == [0.0, 0.5, 1.0, 1.0]
    assert BetaSchedule.create({"warmup_epochs": 2})(1.0) == 0.5


@pytest.mark.parametrize("within_noise", [False, True], ids=["any-record", "within-noise"])
def test_early_stopping_keeps_the_best_weights(tmp_path, within_noise):
    x, valid = binary_data(300), binary_data(60, seed=2)
    vae = small_vae()
    # A large learning rate makes the validation ELBO wander, so patience triggers.
    history = fit(
        vae,
        x,
        valid,
        epochs=60,
        batch_size=20,
        lr=0.05,
        patience=3,
        valid_samples=4,
        checkpoint_dir=tmp_path,
        progress=False,
        stop_within_noise=within_noise,
    )
    best = max(history["valid_bound"])
    assert history["valid_bound"][history.best_epoch - 1] == best
    assert history["valid_elbo"] == history["valid_bound"]  # the ELBO is the elbo objective's bound
    replay = EarlyStopping(3, within_noise=within_noise)  # the rule fit applies, on its scores
    stops = [replay.update(e, v, {}) for e, v in enumerate(history["valid_bound"], 1)]
    assert history.stopped_early == stops[-1] and not any(stops[:-1])
    # The returned model is the best epoch's, reproducibly scored.
    assert validation_elbo(vae, valid, num_samples=4) == pytest.approx(best, abs=1e-4)
    saved = VAE.load(tmp_path)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, saved.state_dict()[k])


def test_early_stopping_noise_is_the_scatter_of_the_score_about_its_trend():
    rng = np.random.default_rng(0)
    sigma, n = 0.3, 4001
    stopping = EarlyStopping(None, window=n)
    for epoch, value in enumerate(0.01 * np.arange(n) + rng.normal(0, sigma, n), 1):
        stopping.update(epoch, float(value), {})
    # 1.4826 MAD of N(0, 2 sigma^2) changes, over sqrt(2): sigma, whatever the trend
    assert stopping.noise() == pytest.approx(sigma, rel=0.05)
    assert EarlyStopping(None).noise() == 0.0  # no changes yet: any gain counts


def curve(slope: float, sigma: float, epochs: int, seed: int = 0) -> np.ndarray:
    return slope * np.arange(epochs) + np.random.default_rng(seed).normal(0, sigma, epochs)


def stop_epoch(scores: np.ndarray, rule: EarlyStopping) -> int | None:
    for epoch, value in enumerate(scores, 1):
        if rule.update(epoch, float(value), {}):
            return epoch
    return None


def test_early_stopping_waits_for_gains_larger_than_the_noise():
    # Creeping up by twice its scatter per 50 epochs: the new records that keep a patience-50
    # run going for 3000 epochs are gains within the noise.
    creeping = curve(0.004, 0.1, 3000)
    assert stop_epoch(creeping, EarlyStopping(50)) is None  # the default: any new record
    assert stop_epoch(creeping, EarlyStopping(50, within_noise=True)) < 1000
    rising = curve(0.02, 0.1, 1000)  # twice the scatter per 10 epochs: never stale for 50
    assert stop_epoch(rising, EarlyStopping(50, within_noise=True)) is None
    rule = EarlyStopping(None, within_noise=True)
    stop_epoch(creeping[:300], rule)
    assert rule.best_value == max(creeping[:300])  # the best weights are still the best score's
    assert len(rule.recent) == NOISE_WINDOW + 1


def test_checkpoint_files_and_training_state_load_safely(tmp_path):
    vae = small_vae()
    fit(vae, binary_data(64), epochs=2, batch_size=32, checkpoint_dir=tmp_path, progress=False)
    assert {"config.json", "model.pt", TRAINING_STATE_FILE} <= {p.name for p in tmp_path.iterdir()}
    state = torch.load(tmp_path / TRAINING_STATE_FILE, weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert set(state["model"]) == set(vae.state_dict())


@pytest.mark.parametrize("every_s", [0.0, None], ids=["every-epoch", "by-time"])
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(tmp_path, every_s):
    x = binary_data(64)
    vae = small_vae()
    calls = {"n": 0}
    forward = vae.decoder.forward

    def poisoned(z):
        calls["n"] += torch.is_grad_enabled()  # training steps only (checks run without gradients)
        out = forward(z)
        # Two steps per epoch: NaN in epoch 3.
        return out * float("nan") if calls["n"] > 4 else out

    vae.decoder.forward = poisoned
    every = {} if every_s is None else {"checkpoint_every_s": every_s}
    # By time (30 s by default), the last checkpoint of this short run is the first epoch's.
    kept = 2 if every_s == 0 else 1
    with pytest.raises(TrainingDiverged, match=rf"loss became nan at epoch 3.*intact \(epoch {kept};") as err:
        fit(vae, x, epochs=5, batch_size=32, checkpoint_dir=tmp_path, progress=False, **every)
    assert len(err.value.history) == 2
    for v in vae.state_dict().values():
        assert torch.isfinite(v).all()
    assert torch.load(tmp_path / TRAINING_STATE_FILE, weights_only=True)["epoch"] == kept
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 2  # every epoch's line
    if kept == 2:  # the model on disk is the one restored in memory
        saved = VAE.load(tmp_path)
        for k, v in vae.state_dict().items():
            assert torch.equal(v, saved.state_dict()[k])


def test_checkpoints_by_time_then_at_the_end_resume_to_the_bit(tmp_path, monkeypatch):
    import pyro_vae.infer.training as training

    saved = []
    save = training.atomic_torch_save
    monkeypatch.setattr(
        training, "atomic_torch_save", lambda obj, path: (saved.append(path.name), save(obj, path))
    )
    x, valid = binary_data(128), binary_data(40, seed=1)
    settings = dict(batch_size=32, patience=None, progress=False, checkpoint_every_s=3600.0)
    torch.manual_seed(0)
    whole = small_vae()
    fit(whole, x, valid, epochs=9, **settings)
    saved.clear()
    torch.manual_seed(0)
    part = small_vae()
    fit(part, x, valid, epochs=6, checkpoint_dir=tmp_path, **settings)
    # after epoch 1 and after the last one (6): an hour never passed in between
    assert saved.count(TRAINING_STATE_FILE) == 2
    assert torch.load(tmp_path / TRAINING_STATE_FILE, weights_only=True)["epoch"] == 6
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 6
    resumed = small_vae()
    fit(resumed, x, valid, epochs=9, checkpoint_dir=tmp_path, resume=True, **settings)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_data_dependent_prior_initialisation_happens_once():
    x = binary_data(100)
    vae = small_vae(prior={"name": "vamp", "options": {"num_components": 5}})
    fit(vae, x, epochs=1, batch_size=100, lr=1e-9, progress=False)
    u = vae.prior.pseudo_inputs.detach().clone()
    # Initialised at training points (plus 0.01 noise), not around 0.5.
    dist_to_data = torch.cdist(u, x).min(1).values
    assert (dist_to_data < 0.1).all()
    fit(vae, x, epochs=1, batch_size=100, lr=1e-9, progress=False)
    torch.testing.assert_close(vae.prior.pseudo_inputs.detach(), u, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss, particles", [("elbo", 3), ("elbo_analytic", 1), ("iwae", 5)])
def test_every_objective_trains(loss, particles):
    x, valid = binary_data(200), binary_data(50, seed=1)
    vae = small_vae()
    before = validation_elbo(vae, valid)
    history = fit(
        vae, x, valid, epochs=8, batch_size=50, lr=1e-2, loss=loss, num_particles=particles, progress=False
    )
    assert history["valid_elbo"][-1] > before


@pytest.mark.parametrize("prior", ["mixture", "vamp", "learned_normal", "laplace", "student_t"])
def test_learned_and_heavy_tailed_priors_train(prior):
    x, valid = binary_data(200), binary_data(50, seed=1)
    vae = small_vae(prior=prior)
    params_before = {k: v.clone() for k, v in vae.prior.named_parameters()}
    history = fit(vae, x, valid, epochs=5, batch_size=50, lr=1e-2, progress=False)
    assert np.isfinite(history["valid_elbo"]).all()
    for k, v in vae.prior.named_parameters():
        assert not torch.equal(v, params_before[k]), f"prior parameter {k} did not train"


def test_progress_off_a_terminal_is_a_few_lines(capsys):
    fit(small_vae(), binary_data(40), epochs=30, batch_size=20, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    # Not a terminal: the first epoch and the last, not one update per step.
    assert lines[0].startswith("epoch 1/30: loss") and lines[-1].startswith("epoch 30/30: loss")
    assert len(lines) <= 3


def test_fit_optimizer_is_fused_adam_with_the_default_update():
    torch.manual_seed(0)
    a = torch.nn.Linear(20, 5)
    b = torch.nn.Linear(20, 5)
    b.load_state_dict(a.state_dict())
    start = a.weight.detach().clone()
    fused = make_optimizer(a.parameters(), 1e-2)
    plain = torch.optim.Adam(b.parameters(), lr=1e-2)
    assert fused.param_groups[0]["fused"] is True
    x = torch.randn(64, 20)
    for _ in range(20):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a.weight, start)  # the comparison is between trained weights


def test_the_seed_sets_the_initial_weights_whichever_way_the_likelihood_was_chosen():
    x = torch.rand(64, 6)  # grey levels in (0, 1): "auto" chooses continuous_bernoulli
    torch.manual_seed(123)  # different global states at construction must not matter
    named = VAE(6, 2, hidden=(8,), likelihood="continuous_bernoulli")
    torch.manual_seed(456)
    auto = VAE(6, 2, hidden=(8,), likelihood="auto")
    for vae in (named, auto):
        fit(vae, x, epochs=2, batch_size=32, seed=3, progress=False)
    assert auto.likelihood.name == "continuous_bernoulli"
    for k, v in named.state_dict().items():
        assert torch.equal(v, auto.state_dict()[k]), k
    other = VAE(6, 2, hidden=(8,), likelihood="continuous_bernoulli")
    fit(other, x, epochs=2, batch_size=32, seed=4, progress=False)
    assert not torch.equal(
        other.state_dict()["encoder.net.0.weight"], named.state_dict()["encoder.net.0.weight"]
    )


def test_auto_choice_is_in_the_history_and_shown_with_progress(capsys):
    history = fit(VAE(6, 2, hidden=(8,)), torch.rand(32, 6), epochs=1, progress=True)
    assert history.notes and "continuous_bernoulli" in history.notes[0]
    assert "likelihood 'auto' chose 'continuous_bernoulli'" in capsys.readouterr().err


def test_exploding_data_are_blamed_on_their_scale_not_the_learning_rate():
    x = torch.randn(64, 4) * 1e30
    with pytest.raises(TrainingDiverged, match=r"data reach .*standardize"):
        fit(VAE(4, 2, hidden=(8,), likelihood="gaussian"), x, epochs=3, batch_size=32, progress=False)


def test_fit_settings_are_checked_like_the_config_file():
    x = binary_data(20)
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer, got '2'"):
        fit(small_vae(), x, epochs="2", progress=False)
    with pytest.raises(ConfigError, match=r"train.batch_size must be an integer or null, got 64.5"):
        fit(small_vae(), x, batch_size=64.5, progress=False)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['bogus'\]"):
        fit(small_vae(), x, bogus=1, progress=False)
    with pytest.raises(ConfigError, match=r"train.max_minutes must be a positive number"):
        fit(small_vae(), x, max_minutes=-1, progress=False)
    config = TrainConfig(epochs=1, batch_size=10)
    history = fit(small_vae(), x, None, config, progress=False)
    assert len(history) == 1


def _encoder_scaled_after(vae: VAE, scale) -> None:
    """Multiply the encoder's output by ``scale(n)``, n counting training-step calls only."""
    calls = {"n": 0}
    forward = vae.encoder.net.forward

    def scaled(h):
        calls["n"] += torch.is_grad_enabled()
        return forward(h) * scale(calls["n"])

    vae.encoder.net.forward = scaled


def test_one_exploded_batch_is_skipped_and_training_goes_on():
    """An outlier batch whose loss explodes is not a divergence: its step is skipped."""
    x = torch.randn(64, 4)
    vae = VAE(4, 2, hidden=(8,), likelihood="gaussian")
    _encoder_scaled_after(vae, lambda n: 1e4 if n == 9 else 1.0)  # one step of epoch 3 (four per epoch)
    history = fit(vae, x, epochs=4, batch_size=16, progress=False)
    assert len(history) == 4
    assert history.notes[-1] == "1 step(s) whose batch loss exploded were skipped"
    assert all(math.isfinite(v) for v in history["train_loss"])


def test_exploded_steps_in_a_row_stop_training():
    x = torch.randn(64, 4)
    vae = VAE(4, 2, hidden=(8,), likelihood="gaussian")
    _encoder_scaled_after(vae, lambda n: 1e4 if n > 8 else 1.0)
    with pytest.raises(TrainingDiverged, match=r"exploded .* restored to the weights after epoch 2") as err:
        fit(vae, x, epochs=6, batch_size=16, progress=False)
    # epoch 3's four steps were skipped; its weights (unchanged) then failed the epoch's check
    assert len(err.value.history) == 2


# --------------------------------------------------------------------------- the compiled step


def weights(vae: VAE) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in vae.state_dict().items()}


def test_compiled_step_computes_the_eager_loss_and_gradients():
    if step_module.compiler_problem(torch.device("cpu")) is not None:
        pytest.skip("no C++ compiler for torch.compile")
    x = binary_data(64)
    eager, compiled = small_vae(), small_vae()
    fit(eager, x, epochs=1, batch_size=32, progress=False, lr=1e-9)  # builds the networks, seed 0
    compiled.load_state_dict(eager.state_dict())
    compiled.fitted = True
    replayed = {}
    for name, vae in (("eager", eager), ("compiled", compiled)):
        replayed[name] = ReplayedELBO(vae)
        if name == "compiled":
            assert replayed[name].compile(torch.device("cpu")) is None
    values, grads = {}, {}
    for beta in (1.0, 0.3):  # beta 0.3 goes in as a tensor: one graph for a warm-up's every beta
        for name, vae in (("eager", eager), ("compiled", compiled)):
            vae.zero_grad()
            torch.manual_seed(1)  # the same draws (inductor keeps eager's random numbers)
            loss = replayed[name](x, beta)
            loss.backward()
            values[name] = float(loss.detach())
            grads[name] = {n: p.grad.clone() for n, p in vae.named_parameters()}
        assert values["compiled"] == pytest.approx(values["eager"], rel=1e-5)
        for n, g in grads["eager"].items():
            torch.testing.assert_close(grads["compiled"][n], g, rtol=1e-4, atol=1e-5)


def test_without_a_compiler_the_step_stays_eager_with_one_note(monkeypatch):
    x = binary_data(64)
    torch.manual_seed(0)
    eager = small_vae()
    fit(eager, x, epochs=2, batch_size=32, progress=False)
    monkeypatch.setattr(step_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    torch.manual_seed(0)
    fallback = small_vae()
    history = fit(fallback, x, epochs=2, batch_size=32, progress=False, compile_step=True)
    assert [n for n in history.notes if "compile" in n] == [
        "compile_step: the training step stays eager: no C++ compiler on PATH (g++, c++, clang++ or $CXX)"
    ]
    assert all(torch.equal(v, weights(fallback)[k]) for k, v in weights(eager).items())


def test_a_compiler_that_fails_falls_back_to_the_eager_step(monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("C++ compile error: cc1plus not found\nmore lines")

    x = binary_data(64)
    torch.manual_seed(0)
    eager = small_vae()
    fit(eager, x, epochs=2, batch_size=32, progress=False)
    monkeypatch.setattr(step_module, "compiler_problem", lambda device: None)
    monkeypatch.setattr(step_module, "_compiled_loss", lambda: broken)
    torch.manual_seed(0)
    fallback = small_vae()
    with caplog.at_level("WARNING", logger="pyro_vae.infer.replayed_elbo"):
        fit(fallback, x, epochs=2, batch_size=32, progress=False, compile_step=True)
    assert [r.getMessage() for r in caplog.records] == [
        "training step: torch.compile failed, the eager step is used: C++ compile error: cc1plus not found"
    ]
    assert all(torch.equal(v, weights(fallback)[k]) for k, v in weights(eager).items())
