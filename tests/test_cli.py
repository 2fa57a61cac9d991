"""The command line: --help, one-line refusals with exit status 2, a whole tiny run, resume."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgan.train import main


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./data and ./runs land in the test's own folder
    return tmp_path


def tiny_args(tiny_mnist, out, *extra):
    return ["--data-dir", str(tiny_mnist), "--out", str(out), "--batch-size", "32", "--log-every", "2", *extra]


def test_help_lists_flags_with_their_defaults():
    result = subprocess.run([sys.executable, "-m", "fastgan.train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--gan", "--arch", "--dataset", "--data-dir", "--epochs", "--batch-size", "--lr-g", "--lr-d", "--beta1",
                 "--beta2", "--z-dim", "--seed", "--out", "--resume", "--sample-every", "--log-every", "--n-critic",
                 "--clip", "--gp-weight", "--margin", "--gamma", "--mixed-precision", "--log-with", "--mode", "--optimizer"):
        assert flag in text, flag
    assert "default: wgan 0.01" in text  # a knob shows the variants that use it
    assert "default: 1; wgan 2, wgan_gp 5" in text
    assert "one of adam, rmsprop; default: adam; wgan rmsprop" in text


REFUSALS = [
    (["--gan", "gann"], "unknown --gan 'gann'"),
    (["--arch", "resnet"], "unknown --arch 'resnet'"),
    (["--dataset", "cifar"], "unknown --dataset 'cifar'"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--batch-size", "-4"], "--batch-size must be a positive integer, got -4"),
    (["--z-dim", "0"], "--z-dim must be a positive integer"),
    (["--lr-g", "0"], "--lr-g must be a finite number > 0"),
    (["--lr-d", "nan"], "--lr-d must be a finite number > 0"),
    (["--beta1", "1.0"], "--beta1 must be in [0, 1)"),
    (["--beta2", "-0.1"], "--beta2 must be in [0, 1)"),
    (["--gan", "gan", "--clip", "0.1"], "--clip does not apply to --gan gan (used by: wgan)"),
    (["--gan", "wgan", "--clip", "-1"], "--clip must be a finite number > 0"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such directory"),
    (["--resume", "missing.pt"], "--resume missing.pt: no such file"),
    (["--kernels", "cuda"], "unknown --kernels 'cuda'"),
    (["--mode", "turbo"], "unknown --mode 'turbo'"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**31), got -1"),
    (["--seed", "5000000000"], "--seed must be an integer in [0, 2**31)"),
    (["--arch", "conv", "--batch-size", "1"], "--batch-size 1: the conv networks' BatchNorm needs at least 2"),
    (["--gan", "ebgan", "--batch-size", "1"], "--batch-size 1: ebgan's pull-away term needs at least 2"),
]


@pytest.mark.parametrize("argv, message", REFUSALS, ids=[a[0] for a, _ in REFUSALS])
def test_bad_input_is_refused_in_one_line_before_any_work(argv, message, in_tmp, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(in_tmp.iterdir()) == []  # nothing created


def test_batch_larger_than_dataset_is_refused(tiny_mnist, in_tmp, capsys):
    assert main(tiny_args(tiny_mnist, in_tmp / "run", "--batch-size", "1000")) == 2
    assert "--batch-size 1000 is larger than the dataset (256 images)" in capsys.readouterr().err
    assert not (in_tmp / "run").exists()


def test_broken_data_dir_is_refused(tiny_mnist, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_mnist.iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:-1] if f.name.startswith("train-images") else f.read_bytes())
    assert main(["--data-dir", str(broken)]) == 2
    assert "train-images-idx3-ubyte: truncated or padded" in capsys.readouterr().err


def test_eval_every_without_a_test_split_is_refused_before_the_run_starts(tiny_mnist, tmp_path, in_tmp, capsys):
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    for f in tiny_mnist.glob("train-*"):
        (train_only / f.name).write_bytes(f.read_bytes())
    assert main(tiny_args(train_only, in_tmp / "run", "--eval-every", "1")) == 2
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte" in err and err.count("\n") == 1
    assert not (in_tmp / "run").exists()


def test_existing_run_directory_is_not_overwritten(tiny_mnist, in_tmp, capsys):
    (in_tmp / "run").mkdir()
    (in_tmp / "run" / "keep.txt").write_text("x")
    assert main(tiny_args(tiny_mnist, in_tmp / "run")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert [p.name for p in (in_tmp / "run").iterdir()] == ["keep.txt"]


def read_csv(path):
    lines = path.read_text().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


@pytest.mark.parametrize("gan", ["gan", "infogan"])
def test_a_tiny_run_leaves_every_artefact(gan, tiny_mnist, in_tmp):
    run = in_tmp / "run"
    assert main(tiny_args(tiny_mnist, run, "--gan", gan, "--epochs", "2")) == 0
    samples = sorted(p.name for p in (run / "samples").iterdir())
    expected = ["epoch_001.png", "epoch_002.png"]
    if gan == "infogan":
        expected = sorted(expected + [f"epoch_00{e}_cont{j}.png" for e in (1, 2) for j in (1, 2)])
    assert samples == expected
    for name in ("losses.csv", "losses.png", "progress.gif", "checkpoint.pt", "config.json"):
        assert (run / name).stat().st_size > 0, name
    header, rows = read_csv(run / "losses.csv")
    assert header[:4] == ["step", "epoch", "d_loss", "g_loss"]
    assert [int(r[0]) for r in rows] == list(range(2, 17, 2))  # 8 steps per epoch, logged every 2
    assert not [p for p in run.rglob("*.tmp")]  # no leftovers of the atomic writes
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"], checkpoint["config"]["gan"]) == (2, 16, gan)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in checkpoint["G"])
    from PIL import Image

    with Image.open(run / "samples" / "epoch_002.png") as grid:
        assert grid.size == (302, 302)  # 10x10 digits of 28 px with 2 px padding


def test_losses_png_is_drawn_on_the_first_epoch_then_at_most_every_plot_seconds_and_at_the_end(
        tiny_mnist, in_tmp, monkeypatch):
    import fastgan.train
    from fastgan import artifacts

    drawn, draw = [], artifacts.plot_losses
    monkeypatch.setattr(artifacts, "plot_losses", lambda data, *a: (drawn.append(data["epoch"][-1]), draw(data, *a)))
    monkeypatch.setattr(fastgan.train, "PLOT_SECONDS", 1e9)
    assert main(tiny_args(tiny_mnist, in_tmp / "run", "--epochs", "4")) == 0
    assert drawn == [1, 4]
    drawn.clear()
    monkeypatch.setattr(fastgan.train, "PLOT_SECONDS", 0.0)
    assert main(tiny_args(tiny_mnist, in_tmp / "run2", "--epochs", "3")) == 0
    assert drawn == [1, 2, 3]


def test_conditional_grid_is_ten_by_ten(tiny_mnist, in_tmp):
    run = in_tmp / "run"
    assert main(tiny_args(tiny_mnist, run, "--gan", "acgan", "--epochs", "1")) == 0
    from PIL import Image

    with Image.open(run / "samples" / "epoch_001.png") as grid:
        assert grid.size == (302, 302)


def test_resume_continues_at_the_right_epoch_and_matches_an_uninterrupted_run(tiny_mnist, in_tmp):
    straight, split = in_tmp / "straight", in_tmp / "split"
    assert main(tiny_args(tiny_mnist, straight, "--gan", "began", "--epochs", "3")) == 0
    assert main(tiny_args(tiny_mnist, split, "--gan", "began", "--epochs", "1")) == 0
    assert main(["--resume", str(split / "checkpoint.pt"), "--epochs", "3"]) == 0
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (straight, split))
    assert (b["epoch"], b["step"]) == (3, 24)
    for net in ("G", "D"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key}"
    assert torch.equal(a["variant"]["k"], b["variant"]["k"])
    header, rows = read_csv(split / "losses.csv")
    assert [int(r[0]) for r in rows] == list(range(2, 25, 2))
    assert [r[:4] for r in rows] == [r[:4] for r in read_csv(straight / "losses.csv")[1]]
    assert sorted(p.name for p in (split / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]


def test_resume_refuses_another_variant_or_architecture(tiny_mnist, in_tmp, capsys):
    assert main(tiny_args(tiny_mnist, in_tmp / "run", "--epochs", "1")) == 0
    checkpoint = str(in_tmp / "run" / "checkpoint.pt")
    assert main(["--resume", checkpoint, "--gan", "lsgan"]) == 2
    assert "trained --gan gan, not lsgan" in capsys.readouterr().err
    assert main(["--resume", checkpoint, "--arch", "conv"]) == 2
    assert "trained --arch mlp, not conv" in capsys.readouterr().err
    assert main(["--resume", checkpoint, "--optimizer", "rmsprop"]) == 2  # its state is Adam's
    assert "trained --optimizer adam, not rmsprop" in capsys.readouterr().err
    (in_tmp / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["--resume", str(in_tmp / "junk.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_same_seed_same_losses(tiny_mnist, in_tmp):
    for out in ("a", "b"):
        assert main(tiny_args(tiny_mnist, in_tmp / out, "--gan", "wgan_gp", "--epochs", "1", "--log-every", "1")) == 0
    a, b = (read_csv(in_tmp / out / "losses.csv")[1] for out in ("a", "b"))
    assert [r[:5] for r in a] == [r[:5] for r in b]  # everything but the images/s column


def test_tensorboard_records_losses_and_grids(tiny_mnist, in_tmp):
    pytest.importorskip("tensorboard")
    run = in_tmp / "run"
    assert main(tiny_args(tiny_mnist, run, "--epochs", "1", "--log-with", "tensorboard")) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(run.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert {"d_loss", "g_loss"} <= set(events.Tags()["scalars"]) and "samples" in events.Tags()["images"]


def test_trains_where_triton_is_not_installed(tiny_mnist, in_tmp):
    """macOS and Windows have no triton wheels: the kernel modules still import and the ops compute
    their PyTorch reference, --kernels triton and the interpreter's switch included."""
    blocked = "import sys; sys.modules['triton'] = None; from fastgan.train import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", blocked, *tiny_args(tiny_mnist, in_tmp / "run"), "--epochs", "1",
                             "--gan", "wgan_gp", "--kernels", "triton"], capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (in_tmp / "run" / "checkpoint.pt").is_file() and "Triton not available" not in result.stderr


def test_accelerate_launch_runs_the_trainer(tiny_mnist, in_tmp):
    run = in_tmp / "run"
    config = Path(__file__).parents[1] / "launch" / "cpu.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
         "-m", "fastgan.train", *tiny_args(tiny_mnist, run, "--epochs", "1")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoint.pt").is_file() and (run / "samples" / "epoch_001.png").is_file()


def test_default_run_directory_and_resume_in_place(tiny_mnist, in_tmp):
    assert main(["--data-dir", str(tiny_mnist), "--batch-size", "64", "--epochs", "1", "--gan", "lsgan"]) == 0
    (run,) = (in_tmp / "runs").iterdir()
    assert run.name.startswith("lsgan-mlp-")
    assert main(["--resume", str(run / "checkpoint.pt"), "--epochs", "2"]) == 0
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert list((in_tmp / "runs").iterdir()) == [run]


@pytest.mark.parametrize("precision", ["bf16"])
def test_mixed_precision_run(precision, tiny_mnist, in_tmp):
    # A fresh process: Accelerate fixes the precision once per process.
    run = in_tmp / "run"
    result = subprocess.run([sys.executable, "-m", "fastgan.train", "--gan", "wgan_gp", "--epochs", "1",
                             "--mixed-precision", precision, *tiny_args(tiny_mnist, run, "--log-every", "1")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    header, rows = read_csv(run / "losses.csv")
    assert header[2] == "d_loss" and header[4] == "gp" and len(rows) == 8
    assert all(math.isfinite(float(r[i])) for r in rows for i in (2, 4))


def test_a_mode_this_machine_cannot_run_falls_back_with_one_log_line(tiny_mnist, in_tmp):
    run = in_tmp / "run"
    result = subprocess.run([sys.executable, "-m", "fastgan.train", "--gan", "gan", "--epochs", "1", "--mode", "graph",
                             *tiny_args(tiny_mnist, run)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("--mode graph: graph mode needs a CUDA device; running in eager mode") == 1
    assert (run / "checkpoint.pt").exists()
