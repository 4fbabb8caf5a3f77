"""Several processes (gloo on CPU): same optimisation as one process, clear failures, resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pyro_vae
from pyro_vae import VAE
from pyro_vae.infer.training import TRAINING_STATE_FILE
from tests.ddp_worker import gradient_problems, local_gradients, make_problem, mean_guide, train

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def run(cmd, timeout=240, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_two_processes_follow_one_process_with_twice_the_batch(tmp_path, prior):
    out = tmp_path / "ddp.pt"
    run([*TORCHRUN, "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"), str(out), prior])
    ddp = torch.load(out, weights_only=True)

    x, vae = make_problem(prior)
    initial = {k: v.clone() for k, v in vae.state_dict().items()}
    train(vae, x, batch_size=16, distributed_run=False)  # 2 processes x 8 = 16, 12 steps
    moved = False
    for k, v in vae.state_dict().items():
        # Adam's step is m / sqrt(v): where a gradient is close to zero, float32 differences in
        # the order of summation (two averaged halves vs one batch) move a weight by up to
        # ~1e-5 in 12 steps, far below the learning rate (1e-2); gradients that were not all-reduced
        # (each process following its own half batch) would move many by ~lr.
        torch.testing.assert_close(ddp["state"][k], v, rtol=1e-4, atol=5e-5, msg=lambda m, k=k: f"{k}: {m}")
        moved |= not torch.allclose(v, initial[k])
    assert moved

    # Evaluation is sharded over the processes (process r: contiguous share r, seed + r)
    # and gathered in order: scoring each share here with that seed gives the same numbers.
    shares = [
        pyro_vae.evaluate(vae, part, num_samples=400, seed=2 + r)["pointwise"]["log_likelihood"]
        for r, part in enumerate(torch.tensor_split(x, 2))
    ]
    assert ddp["n"] == 96 and ddp["pointwise"].shape == (96,)
    torch.testing.assert_close(ddp["pointwise"], torch.cat(shares), rtol=1e-4, atol=1e-4)
    # distributed=False evaluates everything in the calling process, as without torchrun.
    alone = pyro_vae.evaluate(vae, x, num_samples=400, seed=2)["pointwise"]["log_likelihood"]
    torch.testing.assert_close(ddp["alone"], alone, rtol=1e-4, atol=1e-4)


def test_one_step_gradients_of_two_processes_are_the_average_as_one_process_would_compute(tmp_path):
    """2 processes x 8 points against 1 process x 16, after one backward and before any step.

    The Adam-based test above cannot tell averaging from summing: Adam's update m / sqrt(v)
    is invariant to a constant factor on the gradients. Here the gradients themselves are
    compared. With a noise-free guide the objective is deterministic, so the only differences
    are float32 rounding in the order of summation (two means of 8 averaged vs one mean of
    16, plus the all-reduce): relative errors of order 1e-7 per term, far below rtol=1e-4;
    atol=1e-6 covers entries that nearly cancel (the median entry is ~2e-3, the largest 0.2
    for the MLP and 124 for the conv VAE). A sum would be twice the average, a relative
    difference of 1, ten thousand times the tolerance; the test checks that it would be caught.
    """
    out = tmp_path / "grads.pt"
    run([*TORCHRUN, "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"), str(out), "gradients"])
    ddp = torch.load(out, weights_only=True)
    for name, x, vae in gradient_problems():
        vae.guide = mean_guide(vae)
        single = local_gradients(vae, x)  # one process, all 16 points
        assert single.abs().max() > 1e-3, name  # there is a gradient to compare
        got, local = ddp[name]["ddp"], ddp[name]["local"]
        torch.testing.assert_close(got, single, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(local.mean(0), single, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(local[0], local[1], rtol=1e-4, atol=1e-6)  # the halves differ
        summed = local.sum(0)  # what DDP would leave if it summed instead of averaging
        assert not torch.allclose(summed, single, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(summed, 2 * single, rtol=1e-4, atol=1e-6)


def test_every_likelihood_and_prior_trains_in_sync(tmp_path):
    out = tmp_path / "checked.pt"
    run([*TORCHRUN, "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"), str(out), "every_choice"])
    checked = torch.load(out, weights_only=True)["checked"]
    expected = len(pyro_vae.distributions.likelihoods.names()) + len(pyro_vae.distributions.priors.names())
    assert len(checked) == expected and "gaussian/vamp" in checked and "student_t/standard_normal" in checked


def test_nproc_flag_trains_and_writes_one_run_directory(tmp_path):
    out = tmp_path / "run"
    args = ["--epochs", "3", "--hidden", "32", "--latent-dim", "2", "--eval-samples", "20", "--no-progress"]
    done = run([sys.executable, "-m", "pyro_vae", "train", "--nproc", "2", "--out", str(out), *args])
    assert "ddp     2 processes, gloo" in done.stdout
    assert done.stdout.count("wrote ") == 1  # process 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_points"] == 270 and metrics["training"]["epochs"] == 3
    assert VAE.load(out).likelihood.name == "continuous_bernoulli"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_process_stops_the_other_with_a_clear_error_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"  # a run trains there until it has succeeded
    port = free_port()
    args = [sys.executable, "-m", "pyro_vae", "train", "--out", str(out), "--no-progress", "--hidden", "32"]
    args += ["--epochs", "100000", "--patience", "0", "--eval-samples", "10", "--ddp-timeout", "30"]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not (partial / TRAINING_STATE_FILE).exists():
            assert time.monotonic() < deadline, "training never wrote a checkpoint"
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.2)
        time.sleep(1.0)
        procs[1].send_signal(signal.SIGKILL)
        started = time.monotonic()
        _, err = procs[0].communicate(timeout=60)  # well within the 30 s collective timeout + start-up
        assert time.monotonic() - started < 45
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1
    assert "another training process failed or timed out" in err and "--resume" in err, err[-2000:]

    # The interrupted run stays in its partial directory: the last checkpoint is loadable, and
    # --resume continues from it.
    assert not out.exists()
    done_epochs = torch.load(partial / TRAINING_STATE_FILE, weights_only=True)["epoch"]
    assert done_epochs >= 1
    VAE.load(partial)
    target = done_epochs + 2
    run(
        [
            sys.executable,
            "-m",
            "pyro_vae",
            "train",
            "--resume",
            "--out",
            str(out),
            "--epochs",
            str(target),
            "--no-progress",
        ]
    )
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in history] == list(range(1, target + 1))
