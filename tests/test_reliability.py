"""A run survives SIGKILL, SIGTERM, a torn checkpoint, a full disk and a diverging loss without
losing more than the last few steps, and never leaves a wrong result behind."""
import errno
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from fastgan import artifacts, engine
from fastgan.train import main


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def args(tiny_mnist, out, *extra):
    return ["--data-dir", str(tiny_mnist), "--out", str(out), "--batch-size", "32", "--log-every", "2",
            "--gan", "began", "--epochs", "3", "--checkpoint-every", "3", *extra]


def launch(argv):
    return subprocess.Popen([sys.executable, "-m", "fastgan.train", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_same_run(a, b):
    ca, cb = (torch.load(run / "checkpoint.pt", weights_only=True) for run in (a, b))
    assert (ca["epoch"], ca["batch"], ca["step"]) == (cb["epoch"], cb["batch"], cb["step"])
    for part in ("G", "D", "variant"):
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), f"{part}.{key} differs"
    for part in ("opt_g", "opt_d"):
        for index, state in ca[part]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, cb[part]["state"][index][key]), f"{part} state {index}.{key} differs"

    def rows(run):  # every logged column but images/s
        return [line.split(",")[:-1] for line in (run / "losses.csv").read_text().splitlines()]

    assert rows(a) == rows(b)


def test_sigkill_at_random_points_then_resume_is_bit_identical(tiny_mnist, in_tmp):
    reference = launch(args(tiny_mnist, in_tmp / "reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    rng = random.Random(1234)
    run, killed_mid_run = in_tmp / "killed", 0
    for _ in range(3):
        proc = launch(args(tiny_mnist, run, "--resume", "auto"))
        started = time.monotonic()
        while not (run / "config.json").exists() and proc.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.01)
        (run / "config.json").unlink(missing_ok=True)  # so the next round waits for its own start
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere inside training, a checkpoint write included
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.wait(timeout=60)
    finish = launch(args(tiny_mnist, run, "--resume", "auto"))
    assert finish.wait(timeout=300) == 0, finish.stderr.read()
    assert killed_mid_run >= 1
    assert_same_run(in_tmp / "reference", run)


def test_sigterm_checkpoints_and_exits_cleanly(tiny_mnist, in_tmp):
    run = in_tmp / "run"
    proc = launch(args(tiny_mnist, run, "--epochs", "200"))
    started = time.monotonic()
    while not (run / "losses.csv").exists() and time.monotonic() - started < 120:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    err = proc.stderr.read()
    assert "stopped by SIGTERM after step" in err and "Traceback" not in err
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == checkpoint["epoch"] * 8 + checkpoint["batch"] > 0
    assert main(["--resume", str(run / "checkpoint.pt"), "--epochs", str(checkpoint["epoch"] + 1)]) == 0


def test_mid_epoch_checkpoint_resumes_exactly(tiny_mnist, in_tmp):
    assert main(args(tiny_mnist, in_tmp / "straight", "--epochs", "2")) == 0
    run = in_tmp / "split"
    calls = []

    def stop_after_step_5(self, real, y, iteration):  # a SIGTERM arriving during step 5
        stats = original(self, real, y, iteration)
        if iteration == 4:
            signal.raise_signal(signal.SIGTERM)
        calls.append(iteration)
        return stats

    original = engine.Engine.step
    engine.Engine.step = stop_after_step_5
    try:
        assert main(args(tiny_mnist, run, "--epochs", "2")) == 0
    finally:
        engine.Engine.step = original
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch"], checkpoint["step"]) == (0, 5, 5) and calls == [0, 1, 2, 3, 4]
    assert (run / "losses.png").is_file()  # drawn at the stop: no epoch had ended
    assert main(["--resume", "auto", "--out", str(run)]) == 0
    assert_same_run(in_tmp / "straight", run)


def test_resume_trains_on_with_the_learning_rate_and_betas_given(tiny_mnist, in_tmp):
    run = in_tmp / "run"
    assert main(args(tiny_mnist, run, "--epochs", "1", "--checkpoint-every", "0")) == 0
    assert main(["--resume", str(run / "checkpoint.pt"), "--epochs", "2", "--lr-g", "3e-5", "--beta1", "0.25"]) == 0
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    (g_group,), (d_group,) = checkpoint["opt_g"]["param_groups"], checkpoint["opt_d"]["param_groups"]
    assert (g_group["lr"], g_group["betas"]) == (3e-5, (0.25, 0.999))
    assert (d_group["lr"], d_group["betas"]) == (2e-4, (0.25, 0.999))  # began's lr_d, the new beta1
    assert all(state["step"].item() == 16 for state in checkpoint["opt_g"]["state"].values())  # moments carried on


def test_truncated_checkpoint_is_refused_and_auto_falls_back(tiny_mnist, in_tmp, capsys, caplog):
    run = in_tmp / "run"
    assert main(args(tiny_mnist, run, "--epochs", "2", "--checkpoint-every", "0")) == 0
    latest = run / "checkpoint.pt"
    previous = torch.load(run / "checkpoint.prev.pt", weights_only=True)
    assert previous["epoch"] == 1
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    capsys.readouterr()
    assert main(["--resume", str(latest)]) == 2
    err = capsys.readouterr().err
    assert f"--resume {latest}: not a readable checkpoint" in err and err.count("\n") == 1
    assert main(["--resume", "auto", "--out", str(run), "--epochs", "2"]) == 0  # redoes epoch 2 from the previous one
    assert torch.load(latest, weights_only=True)["epoch"] == 2
    assert "resuming at step 8" in caplog.text


def test_all_checkpoints_torn_is_an_error(tiny_mnist, in_tmp, capsys):
    run = in_tmp / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    assert main(["--resume", "auto", "--out", str(run)]) == 2
    assert "no readable checkpoint" in capsys.readouterr().err


def test_resume_auto_starts_a_new_run_when_there_is_none(tiny_mnist, in_tmp):
    assert main(args(tiny_mnist, in_tmp / "fresh", "--epochs", "1", "--resume", "auto")) == 0
    assert torch.load(in_tmp / "fresh" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_mnist, in_tmp, monkeypatch, capsys):
    run = in_tmp / "run"
    saves = []
    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(artifacts.torch, "save", save_until_the_disk_fills)
    assert main(args(tiny_mnist, run, "--epochs", "3", "--checkpoint-every", "0")) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("fastgan.train: error:") and "No space left on device" in err and "intact" in err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("how", ["poisoned weight", "absurd learning rate"])
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(how, tiny_mnist, in_tmp, monkeypatch, capsys):
    run = in_tmp / "run"
    if how == "poisoned weight":
        original = engine.Engine.step

        def poison_at_step_10(self, real, y, iteration):
            if iteration == 9:
                with torch.no_grad():
                    next(self.G.parameters())[0, 0] = float("nan")
            return original(self, real, y, iteration)

        monkeypatch.setattr(engine.Engine, "step", poison_at_step_10)
        extra = ["--gan", "gan"]
    else:
        extra = ["--gan", "lsgan", "--lr-g", "1e12", "--lr-d", "1e12"]
    assert main(args(tiny_mnist, run, "--checkpoint-every", "0", *extra)) == 3
    err = capsys.readouterr().err.splitlines()[-1]  # the progress bar precedes it on stderr
    assert err.startswith("fastgan.train: error: training diverged") and "the last good checkpoint" in err
    checkpoint_path = run / "checkpoint.pt"
    if how == "poisoned weight":
        assert "step 10" in err
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        assert checkpoint["step"] == 8 and all(torch.isfinite(v).all() for v in checkpoint["G"].values())
    elif checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in checkpoint["G"].values())


@pytest.mark.parametrize("argv, message", [
    (["--resume", "auto"], "--resume auto needs --out DIR"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be an integer >= 0"),
    (["--out", "afile/run"], "--out afile/run: cannot create a folder there (afile is not a writable folder)"),
])
def test_more_refusals(argv, message, in_tmp, capsys):
    (in_tmp / "afile").write_text("not a folder")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile"]


def test_background_writer_keeps_order_and_after_a_failure_skips_the_rest_and_flush_raises():
    writer, done, gate = artifacts.BackgroundWriter(), [], threading.Event()

    def fill_the_disk():
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        writer.submit(lambda: (gate.wait(10), done.append(1)))  # holds the queue while the rest is submitted
        writer.submit(lambda: done.append(2))
        writer.submit(fill_the_disk)
        writer.submit(lambda: done.append(3))  # after the failure: skipped
        gate.set()
        with pytest.raises(OSError, match="No space left"):
            writer.flush()
        writer.submit(lambda: done.append(4))  # skipped too
        with pytest.raises(OSError, match="No space left"):
            writer.flush()
    finally:
        writer.close()
    assert done == [1, 2] and isinstance(writer.failure, OSError)


def test_background_writer_close_finishes_what_was_submitted():
    writer, done = artifacts.BackgroundWriter(pending=1), []
    for i in range(3):  # more than `pending`: submit waits for room
        writer.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    writer.close()
    assert done == [0, 1, 2] and writer.failure is None


def test_snapshot_is_a_copy_that_training_can_no_longer_change():
    weight, rng = torch.zeros(3), torch.ones(2)
    payload = {"G": {"w": weight}, "rng": [rng], "betas": (0.5, 0.9), "step": 3}
    copy = artifacts.snapshot(payload)
    weight.add_(1)
    rng.zero_()
    assert torch.equal(copy["G"]["w"], torch.zeros(3)) and torch.equal(copy["rng"][0], torch.ones(2))
    assert copy["betas"] == (0.5, 0.9) and copy["step"] == 3
    state = torch.nn.BatchNorm1d(2).state_dict()  # an OrderedDict whose _metadata load_state_dict reads
    copy = artifacts.snapshot(state)
    assert type(copy) is type(state) and copy._metadata == state._metadata and list(copy) == list(state)


def test_checkpoint_pt_exists_at_every_instant_of_a_rotation(in_tmp, monkeypatch):
    """A crash between the rotation's steps (here: just before the new file takes the name) still
    leaves checkpoint.pt, the file the trainer names for --resume, and the newest state beside it."""
    artifacts.save_checkpoint(in_tmp, {"step": 1})
    artifacts.save_checkpoint(in_tmp, {"step": 2})
    real_replace = artifacts.os.replace

    def crash_before_the_last_rename(src, dst):
        if str(dst).endswith(artifacts.CHECKPOINT):
            raise KeyboardInterrupt  # the process dies here
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", crash_before_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save_checkpoint(in_tmp, {"step": 3})
    monkeypatch.undo()
    assert artifacts.load_checkpoint(in_tmp / artifacts.CHECKPOINT)["step"] == 2
    assert artifacts.load_checkpoint(in_tmp / artifacts.PREVIOUS)["step"] == 2
    assert artifacts.newest_checkpoint(in_tmp)[1]["step"] == 3  # checkpoint.pt.new, complete on disk


def test_run_files_are_as_readable_as_the_umask_allows(in_tmp, monkeypatch):
    monkeypatch.setattr(artifacts, "_UMASK", 0o022)  # the usual one; mkstemp alone gives 0600
    artifacts.write_json(in_tmp / "config.json", {})
    artifacts.save_checkpoint(in_tmp, {"step": 1})
    for name in ("config.json", artifacts.CHECKPOINT):
        assert stat.S_IMODE((in_tmp / name).stat().st_mode) == 0o644


def test_the_progress_gif_keeps_every_grey_level(in_tmp):
    from PIL import Image

    ramp = torch.linspace(-1, 1, 28 * 28).view(1, 1, 28, 28)
    frames = [in_tmp / f"epoch_{i}.png" for i in range(2)]
    for frame in frames:
        artifacts.save_grid(ramp, frame, 1)
    artifacts.save_gif(frames, in_tmp / "progress.gif")
    with Image.open(in_tmp / "progress.gif") as gif:
        assert np.unique(np.asarray(gif.convert("L"))).size > 200
