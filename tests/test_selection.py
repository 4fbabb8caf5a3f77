"""pyro_vae.select: the latent size and widths by validation log p(x), and what it picked."""

import math

import pytest

import pyro_vae
from pyro_vae.errors import ConfigError
from pyro_vae.infer import selection
from tests.conftest import binary_data


def test_select_picks_by_validation_log_likelihood_and_says_what(monkeypatch):
    x, valid = binary_data(120), binary_data(40, seed=1)
    scores = {(1, (8,)): -7.0, (1, (16,)): -5.0, (2, (8,)): -6.0, (2, (16,)): math.nan}
    real_evaluate = selection.evaluate

    def fake_evaluate(vae, data, **kw):
        assert data is valid and real_evaluate(vae, data, num_samples=2)["log_likelihood"] < 0
        return {"log_likelihood": scores[(vae.latent_dim, tuple(vae.hidden))]}

    monkeypatch.setattr(selection, "evaluate", fake_evaluate)
    chosen = pyro_vae.select(
        x, valid, latent_dims=(1, 2), hidden=((8,), (16,)), likelihood="bernoulli", epochs=2, seed=3
    )
    assert (chosen.latent_dim, chosen.hidden) == (1, (16,))
    assert chosen.vae.fitted and chosen.vae.latent_dim == 1 and len(chosen.history) == 2
    assert [c["valid_log_likelihood"] for c in chosen.candidates][:3] == [-7.0, -5.0, -6.0]
    assert chosen.history.notes[-1].startswith("select chose latent 1, hidden 16 ")
    with pytest.raises(ConfigError, match="validation data"):
        pyro_vae.select(x, latent_dims=(1,), hidden=((8,),), likelihood="bernoulli", epochs=1)


def test_cli_select_prints_every_candidate_and_the_train_flags_of_the_best(capsys):
    from pyro_vae.app.cli import main

    argv = ["select", "--latent-dims", "1,2", "--widths", "8;16,16", "--epochs", "2", "--no-progress"]
    assert main([*argv, "--num-threads", "1", "--prior", "mixture"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("latent")]
    assert len(lines) == 4 and "hidden 16,16" in lines[1] and "validation log p(x)" in lines[0]
    assert "select chose latent " in out and "train it with: --latent-dim " in out
