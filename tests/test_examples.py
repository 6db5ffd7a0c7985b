"""Every example runs (with a reduced step count) and prints what it promises."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=600):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_quickstart():
    out = run_example("quickstart.py")
    assert "36.0>" in out and "10.0>" in out
    assert "36.000003007075065" in out and "10.000000003174137" in out
    assert "jit_grad: value 105, gradients (36, 10)" in out


def test_higher_order(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ho.png"
    out = run_example("higher_order.py", "--out", str(png))
    assert png.stat().st_size > 1000
    errors = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |" in line]
    assert len(errors) == 5 and max(errors) < 1e-5


def test_train_digits(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    png = tmp_path / "curve.png"
    out = run_example("train_digits.py", "--epochs", "12", "--plot", str(png))
    accuracy = float(out.rsplit("test accuracy:", 1)[1].split()[0])
    assert accuracy >= 0.95
    assert "time to first step" in out and "us/step" in out
    assert png.stat().st_size > 1000


def test_train_digits_distributed():
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    pytest.importorskip("mpi4py")
    out = subprocess.run(
        [sys.executable, "-m", "jitgrad.distributed.run", "-n", "2"]
        + [os.path.join(ROOT, "examples", "train_digits_distributed.py"), "--epochs", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 ranks, global batch 64" in out.stdout
    assert out.stdout.count("test accuracy:") == 1  # rank 0 logs
    assert float(out.stdout.rsplit("test accuracy:", 1)[1].split()[0]) >= 0.9


def test_train_cnn_digits(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    curve, filters = tmp_path / "curve.png", tmp_path / "filters.png"
    out = run_example(
        "train_cnn_digits.py",
        *("--epochs", "4", "--filters", "4", "--limit", "384", "--batch-size", "32"),
        *("--learning-rate", "0.01", "--plot", str(curve), "--filters-png", str(filters)),
    )
    epochs = [line for line in out.splitlines() if "train acc" in line]
    losses = [float(line.split("loss", 1)[1].split()[0]) for line in epochs]
    accuracy = float(out.rsplit("test accuracy:", 1)[1].split()[0])
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert accuracy >= 0.6  # a tiny model after 48 steps; the full-size run reaches 98.5%
    assert "time to first step" in out and "ms/step" in out and "98.5% target" in out
    assert curve.stat().st_size > 1000 and filters.stat().st_size > 1000


def test_logistic_regression_tape():
    out = run_example("logistic_regression_tape.py", "--steps", "20")
    assert "1 eager, 19 compiled" in out
    assert float(out.rsplit("training accuracy:", 1)[1]) > 0.8


def test_jax_style():
    out = run_example("jax_style.py", "--steps", "200")
    assert float(out.rsplit("final mse:", 1)[1]) < 0.05


def test_ode_fit(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ode.png"
    out = run_example(
        "ode_fit.py", "--iters", "300", "--steps", "300", "--log-every", "100", "--plot", str(png)
    )
    first = float(out.split("iter     1: loss", 1)[1].split()[0])
    final = float(out.rsplit("final loss:", 1)[1].split()[0])
    at_truth = float(out.rsplit("at the true parameters:", 1)[1].split(";")[0])
    assert final < first / 5 and final <= 1.05 * at_truth  # down to the noise floor
    assert "max relative error" in out and "us/step" in out
    assert png.stat().st_size > 1000


def test_rnn_sequence(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    png = tmp_path / "rnn.png"
    out = run_example(
        "rnn_sequence.py",
        *("--steps", "200", "--length", "12", "--hidden", "16"),
        *("--train", "1024", "--test", "256", "--eval-every", "100", "--plot", str(png)),
    )
    accuracy = float(out.rsplit("test accuracy:", 1)[1].split()[0])
    baseline = float(out.rsplit("current input alone:", 1)[1].split(")")[0])
    assert accuracy >= 0.85 and accuracy > baseline + 0.15  # it remembers, not just reads
    assert "ms/step" in out and png.stat().st_size > 1000


def test_per_example_gradients():
    pytest.importorskip("sklearn")
    out = run_example("per_example_gradients.py", "--epochs", "3")
    assert float(out.split("max |diff| = ", 1)[1].split()[0]) < 1e-5
    assert float(out.rsplit("test accuracy:", 1)[1].split()[0]) >= 0.75
    assert "us/step" in out


def test_gaussian_process():
    out = run_example("gaussian_process.py", "--steps", "150")
    assert "fitted: lengthscale" in out
    assert float(out.rsplit("posterior mean:", 1)[1].split()[0]) < 0.15
    first = float(out.split("step    1: -log p(y)/N =", 1)[1].split()[0])
    last = float(out.split("step  100: -log p(y)/N =", 1)[1].split()[0])
    assert last < first - 1.0
