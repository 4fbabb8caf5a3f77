"""Faults that need more than one command or a prepared directory: what a killed process leaves
(stale temporary files, ``.NAME.old``, a partial run without a checkpoint), a foreign
``training_state.pt`` under ``--resume``, ``compare`` under train's run-directory rules, and the
memory a step needs, checked before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae import VAE, fit, memory
from pyro_vae.app import cli
from pyro_vae.app.rundir import RunDirectory
from pyro_vae.errors import ConfigError, RunDirectoryError
from pyro_vae.infer.objectives import make_elbo
from tests.test_faults import RUN, SMALL, run_cli, snapshot

QUICK_COMPARE = [
    "--quick",
    "--priors",
    "standard_normal",
    "--epochs",
    "1",
    "--no-progress",
    "--num-threads",
    "1",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    assert cli.main(["train", "--out", str(root / RUN), *SMALL]) == 0
    return root / RUN


@pytest.fixture
def here(finished: Path, tmp_path: Path, monkeypatch) -> Path:
    shutil.copytree(finished, tmp_path / RUN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def refused(argv: list[str], capsys, pattern: str) -> str:
    code, err = run_cli(argv, capsys)
    assert code != 0, err
    assert err.startswith("pyro-vae: error: ") and err.count("\n") == 1, err
    assert re.search(pattern, err, re.S), err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- leftovers


def test_stale_tmp_in_partial_is_not_carried_by_resume(here: Path, capsys) -> None:
    partial = here / f".{RUN}.partial"
    shutil.copytree(here / RUN, partial)
    shutil.rmtree(here / RUN)
    stale = partial / f".metrics.json.{dead_pid()}.tmp"
    stale.write_text('{"half": ')
    code = cli.main(["train", "--out", RUN, "--resume", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    assert f"removed .{RUN}.partial/{stale.name}: half a file" in out
    assert not any(p.name.endswith(".tmp") for p in (here / RUN).iterdir())
    assert not partial.exists()


def test_live_process_tmp_is_left_alone(here: Path) -> None:
    live = here / RUN / ".metrics.json.1.tmp"  # pid 1 is always running
    live.write_text("being written")
    RunDirectory(here / RUN, overwrite=True, echo=lambda line: None).check()
    assert live.read_text() == "being written"


def test_old_copy_after_final_rename_is_removed(here: Path, capsys) -> None:
    shutil.copytree(here / RUN, here / f".{RUN}.old")
    before = snapshot(here / RUN)
    capsys.readouterr()
    assert cli.main(["train", "--out", RUN, *SMALL]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"removed .{RUN}.old: the replaced run, left when a process was stopped")
    assert re.fullmatch(r"pyro-vae: error: run already holds a run .*\n", captured.err)
    assert not (here / f".{RUN}.old").exists()
    assert snapshot(here / RUN) == before


def test_old_copy_reported(here: Path) -> None:
    shutil.copytree(here / RUN, here / f".{RUN}.old")
    lines: list[str] = []
    RunDirectory(RUN, overwrite=True, echo=lines.append).check()
    assert lines and lines[0].startswith(f"removed .{RUN}.old: the replaced run")


def test_move_cut_short_is_finished(here: Path) -> None:
    """Killed between the two renames of commit(): the old run in .old, the new one whole in .partial."""
    shutil.copytree(here / RUN, here / f".{RUN}.partial")
    (here / f".{RUN}.partial" / "marker").write_text("new")
    (here / RUN).rename(here / f".{RUN}.old")
    lines: list[str] = []
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        RunDirectory(RUN, echo=lines.append).check()
    assert (here / RUN / "marker").read_text() == "new"
    assert not (here / f".{RUN}.old").exists() and not (here / f".{RUN}.partial").exists()
    assert lines == [f"finished moving the run into {RUN}: its process was stopped during the move"]


def test_replaced_run_restored_when_nothing_replaced_it(here: Path) -> None:
    (here / RUN).rename(here / f".{RUN}.old")
    before = snapshot(here / f".{RUN}.old")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        RunDirectory(RUN, echo=lambda line: None).check()
    assert snapshot(here / RUN) == before


def _killed_in_epoch_1(here: Path) -> Path:
    """What a run killed during its first epoch leaves: config.json and model.pt, no training state."""
    partial = here / ".new.partial"
    partial.mkdir()
    for name in ("config.json", "model.pt"):
        shutil.copy(here / RUN / name, partial / name)
    return partial


def test_killed_in_epoch_1_resume_says_so_and_changes_nothing(here: Path, capsys) -> None:
    partial = _killed_in_epoch_1(here)
    before = snapshot(here)
    refused(
        ["train", "--out", "new", "--resume", *SMALL],
        capsys,
        r"nothing to resume in new: the interrupted run in \.new\.partial stopped before its first "
        r"checkpoint.*without --resume",
    )
    assert snapshot(here) == before and partial.is_dir()


def test_killed_in_epoch_1_plain_run_starts_afresh(here: Path, capsys) -> None:
    _killed_in_epoch_1(here)
    assert cli.main(["train", "--out", "new", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "removed .new.partial: an interrupted run stopped before its first checkpoint" in out
    assert (here / "new" / "metrics.json").is_file() and not (here / ".new.partial").exists()


# ----------------------------------------------------------------------------- foreign training state


def _foreign_shapes(run: Path) -> None:
    path = run / "training_state.pt"
    state = torch.load(path, weights_only=True)
    state["model"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state["model"].items()}
    torch.save(state, path)


def _foreign_keys(run: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, run / "training_state.pt")


def _foreign_format(run: Path) -> None:
    path = run / "training_state.pt"
    state = torch.load(path, weights_only=True)
    state["format"] = 999
    torch.save(state, path)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (_foreign_shapes, r"training state run/training_state\.pt does not fit the run's model \(.*is \("),
        (_foreign_keys, r"training state run/training_state\.pt lacks format, epoch"),
        (_foreign_format, r"run/training_state\.pt was written by another pyro_vae version \(format 999"),
    ],
    ids=["shapes", "keys", "format"],
)
def test_foreign_training_state(damage, pattern: str, here: Path, capsys) -> None:
    damage(here / RUN)
    before = snapshot(here)
    err = refused(["train", "--out", RUN, "--resume", *SMALL], capsys, pattern)
    assert "--overwrite" in err
    assert snapshot(here) == before  # no .partial left to block the next run


# ----------------------------------------------------------------------------- compare


def test_compare_refuses_a_finished_run(here: Path, capsys) -> None:
    before = snapshot(here)
    refused(["compare", "--out", RUN, *QUICK_COMPARE], capsys, r"run already holds a run.*--overwrite")
    assert snapshot(here) == before


def test_compare_follows_run_directory_rules(here: Path, capsys) -> None:
    assert cli.main(["compare", "--out", "cmp", *QUICK_COMPARE]) == 0
    rows = json.loads((here / "cmp" / "comparison.json").read_text())["rows"]
    assert rows[0]["run_dir"] == "cmp/runs/standard_normal"
    assert (here / "cmp" / "runs" / "standard_normal" / "metrics.json").is_file()
    assert not (here / ".cmp.partial").exists() and not (here / ".cmp.lock").exists()
    before = snapshot(here)
    refused(
        ["compare", "--out", "cmp", *QUICK_COMPARE], capsys, r"cmp already holds a comparison.*--overwrite"
    )
    # a failed --overwrite leaves the old comparison byte-identical and no partial one
    refused(["compare", "--out", "cmp", "--overwrite", *QUICK_COMPARE, "--lr", "0"], capsys, r"train\.lr")
    assert snapshot(here) == before
    assert cli.main(["compare", "--out", "cmp", "--overwrite", *QUICK_COMPARE]) == 0
    assert (here / "cmp" / "comparison.md").is_file() and not (here / ".cmp.old").exists()


# ----------------------------------------------------------------------------- memory


def test_footprint_closed_form() -> None:
    fp = memory.Footprint(weights=10, encoder=3, decoder=7)
    assert fp.step_bytes(4, 5) == 4 * (memory.WEIGHT_COPIES * 10 + memory.ACTIVATION_COPIES * 4 * (3 + 5 * 7))
    assert fp.chunk_bytes(6) == 4 * (10 + 2 * 6 * 7)


def test_footprint_counts_every_layer() -> None:
    """A linear VAE (no hidden layer): the encoder makes 2 x latent numbers per point from its input,
    the decoder input_dim x num_params from its code, plus the log-probability's terms."""
    vae = VAE(5, 3, hidden=(), likelihood="gaussian")
    fp = memory.footprint(vae)
    assert fp.weights == sum(p.numel() for p in vae.parameters())
    assert fp.encoder == 5 + 2 * 3
    assert fp.decoder == 3 + 5 * vae.likelihood.num_params + memory.LOG_PROB_NUMBERS * 5


@pytest.mark.parametrize("particles", [10, 200])
def test_step_estimate_against_what_autograd_saves(particles: int) -> None:
    """The tensors autograd saves for the backward pass are one copy of a step's activations;
    the estimate counts ACTIVATION_COPIES (value, gradient, an intermediate): it must lie
    between half and the full multiple of what torch saved, for few and many particles."""
    vae = VAE(64, 8, likelihood="gaussian")
    fp = memory.footprint(vae)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        make_elbo("iwae", particles).differentiable_loss(vae.model, vae.guide, torch.rand(32, 64))
    activations = fp.step_bytes(32, particles) - memory.BYTES_PER_NUMBER * memory.WEIGHT_COPIES * fp.weights
    ratio = activations / sum(saved)
    assert memory.ACTIVATION_COPIES / 2 <= ratio <= memory.ACTIVATION_COPIES, ratio


def test_check_step_names_the_setting() -> None:
    vae = VAE(4, 2, hidden=(8,), likelihood="gaussian")
    memory.check_step(vae, 16, 1, available=10**9)  # fits
    with pytest.raises(ConfigError, match=r"num_particles \(--num-particles\)"):
        memory.check_step(vae, 16, 10**6, available=10**9)
    with pytest.raises(ConfigError, match=r"eval\.chunk_size \(--eval-chunk-size\)"):
        memory.check_chunk(vae, 10**12, available=10**9)


def test_fit_refuses_a_step_that_cannot_fit() -> None:
    vae = VAE(4, 2, hidden=(8,), likelihood="continuous_bernoulli")
    with pytest.raises(ConfigError, match=r"training step of 16 points x 10000000000 particles"):
        fit(
            vae, torch.rand(32, 4), progress=False, epochs=1, batch_size=16, loss="iwae", num_particles=10**10
        )


def test_model_size_checked_without_allocating() -> None:
    with pytest.raises(ConfigError, match=r"latent_dim 1000000000.*--latent-dim; select: --latent-dims"):
        memory.check_model_size(lambda: VAE(64, 10**9, likelihood="gaussian"), available=2**34)


def test_fault_audit_driver_runs(tmp_path: Path) -> None:
    """benchmarks/fault_audit.py, on a few of its cases: none is reported."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import fault_audit
    finally:
        sys.path.pop(0)
    report = tmp_path / "audit.json"
    assert fault_audit.main(["--only", "typo", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["cases"] >= 8 and result["findings"] == []


def test_evaluate_output_replaces_only_its_own_file(here: Path, capsys) -> None:
    assert cli.main(["evaluate", RUN, "--no-progress", "--output", "m.json"]) == 0
    first = json.loads((here / "m.json").read_text())
    assert cli.main(["evaluate", RUN, "--no-progress", "--output", "m.json", "--num-samples", "3"]) == 0
    assert json.loads((here / "m.json").read_text())["num_samples"] == 3 != first["num_samples"]
    (here / "mine.json").write_text('{"a": 1}')
    refused(
        ["evaluate", RUN, "--no-progress", "--output", "mine.json"],
        capsys,
        r"was not written by this command",
    )
    assert (here / "mine.json").read_text() == '{"a": 1}'


def test_killed_run_resumes_and_plain_run_agrees(tmp_path: Path) -> None:
    """A real SIGKILL after the first checkpoint: a plain run is refused naming --resume, and
    --resume finishes the run with no temporary file carried into it."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "pyro_vae",
        "train",
        "--out",
        "new",
        "--hidden",
        "16",
        "--eval-samples",
        "5",
    ]
    argv += ["--no-progress", "--num-threads", "1", "--patience", "0", "--lr-patience", "0"]
    proc = subprocess.Popen([*argv, "--epochs", "100000"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    state = tmp_path / ".new.partial" / "training_state.pt"
    deadline = time.monotonic() + 120
    while not state.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.is_file()
    plain = subprocess.run([*argv, "--epochs", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert plain.returncode != 0 and "continue it with --resume" in plain.stderr, plain.stderr
    resumed = subprocess.run(
        [*argv, "--epochs", "100000", "--max-minutes", "0.01", "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "new" / "metrics.json").is_file()
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_footprint_leaves_the_model_as_it_was() -> None:
    """The counting pass changes no state: a batch norm's running statistics, the training flag
    and the random stream are as before (a batch norm in training mode refuses a batch of one)."""
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5))
    encoder.append(torch.nn.Linear(8, 4))
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 8))
    vae = VAE(4, 2, likelihood="gaussian", encoder=encoder, decoder=decoder)
    vae.train()
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    rng = torch.get_rng_state()
    memory.footprint(vae)
    assert all(torch.equal(state[k], v) for k, v in vae.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in vae.modules())
