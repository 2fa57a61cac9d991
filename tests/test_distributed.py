"""Data parallelism on CPU processes (gloo), launched as users launch it. Run alone with
`pytest -m distributed`; each test starts two training processes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgan.train import main

pytestmark = pytest.mark.distributed
HERE = Path(__file__).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2, cwd=None, succeeds=True):
    """torchrun on loopback; ACCELERATE_USE_CPU=1 makes Accelerate pick the CPU and gloo."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                             "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args],
                            capture_output=True, text=True, env=env, cwd=cwd, timeout=180)
    assert (result.returncode == 0) == succeeds, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("gan, backend", [("lsgan", "torch"), ("wgan_gp", "torch"), ("wgan_gp", "triton"), ("began", "torch")],
                         ids=["lsgan", "wgan_gp-double-backward", "wgan_gp-analytic", "began"])
def test_two_processes_train_like_one_with_the_global_batch(gan, backend, tmp_path):
    # wgan_gp: the penalty's weight gradients must be all-reduced like the rest, on the autograd
    # (double backward) path as on the analytic one; began: k must agree across ranks.
    args = [str(HERE / "ddp_worker.py"), gan, backend, "32", "3"]
    torchrun(*args, str(tmp_path / "two"), nproc=2)
    torchrun(*args, str(tmp_path / "one"), nproc=1)
    one = torch.load(tmp_path / "one.rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"two.rank{r}.pt", weights_only=True) for r in (0, 1)]
    for net in ("G", "D"):
        for key, value in one["state"][net].items():
            assert torch.equal(ranks[0]["state"][net][key], ranks[1]["state"][net][key]), f"ranks disagree on {net}.{key}"
            assert value.dtype == torch.float64
            torch.testing.assert_close(ranks[0]["state"][net][key], value, rtol=1e-9, atol=1e-12)
    if gan == "began":
        assert torch.equal(ranks[0]["k"], ranks[1]["k"])
        torch.testing.assert_close(ranks[0]["k"], one["k"], rtol=1e-9, atol=1e-15)


# conv: BatchNorm in G and D. Grids must use the unwrapped G (DDP's forward syncs buffers across
# processes), and D, called twice per loss, must not have its buffers re-broadcast in between (torch 2.11)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_two_process_run_leaves_one_set_of_artefacts_and_resumes_in_one(arch, tiny_mnist, tmp_path):
    run = tmp_path / "run"
    torchrun("-m", "fastgan.train", "--data-dir", str(tiny_mnist), "--out", str(run), "--batch-size", "16",
             "--epochs", "1", "--log-every", "2", "--gan", "began", "--arch", arch, cwd=tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "losses.csv", "losses.png",
                                                      "progress.gif", "samples"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png"]
    lines = (run / "losses.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in lines[1:]] == [2, 4, 6, 8]  # 256 images / (16 x 2) = 8 steps, once each
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (checkpoint["world_size"], checkpoint["step"], len(checkpoint["rng"])) == (2, 8, 2)
    assert not any(k.startswith("module.") for k in checkpoint["D"])
    os.chdir(tmp_path)
    assert main(["--resume", str(run / "checkpoint.pt"), "--epochs", "2"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 8 + 256 // 16


def patched_trainer(folder: Path, patch: str) -> str:
    """A script that runs fastgan.train after `patch` (code that sees os, data, train; the tests'
    helpers importable), for a torchrun test to change what one rank does."""
    script = folder / "patched_train.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {str(HERE)!r})\nfrom fastgan import data, train\n{patch}"
                      "sys.exit(train.main(sys.argv[1:]))\n")
    return str(script)


def test_every_process_trains_on_the_data_the_main_process_chose(tmp_path):
    """No --data-dir: the main process decides (downloading if it can); the others read what it chose,
    even if a download would have worked for them (here it does, for rank 1 only)."""
    trainer = patched_trainer(tmp_path, (
        "from helpers import write_mnist_dir\n"
        "def download(dataset, root):\n"
        "    if os.environ['RANK'] != '1':\n"
        "        raise RuntimeError('offline')\n"
        "    write_mnist_dir(root / 'MNIST' / 'raw', 64, 10)\n"
        "data._download = download\n"))
    torchrun(trainer, "--out", "run", "--batch-size", "512", "--epochs", "1", "--log-every", "4",
             cwd=tmp_path)
    assert "bundled" in json.loads((tmp_path / "run" / "config.json").read_text())["data_source"]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 9001 // 1024
    assert not (tmp_path / "data").exists()


def test_data_another_process_cannot_read_ends_every_process_in_one_line(tiny_mnist, tmp_path):
    """As on a second node without the files the main process found: no process may be left waiting."""
    trainer = patched_trainer(tmp_path, (
        "read = data.read_split\n"
        "def read_split(source, split):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise data.DataError(f'{source}: missing train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)')\n"
        "    return read(source, split)\n"
        "train.read_split = read_split\n"))
    result = torchrun(trainer, "--data-dir", str(tiny_mnist), "--out", "run", "--batch-size", "16",
                      "--epochs", "1", cwd=tmp_path, succeeds=False)
    assert result.stderr.count("fastgan.train: error: ") == 2 and "missing train-images-idx3-ubyte" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_failed_write_on_the_main_process_ends_every_process(tiny_mnist, tmp_path):
    """The main process writes in the background; its failure must reach the other process at the
    next checkpoint, not leave it waiting at a collective until the timeout."""
    run = tmp_path / "run"
    (run / "checkpoint.pt.new").mkdir(parents=True)  # the checkpoint's rename onto it fails
    (run / "checkpoint.pt.new" / "keep").touch()
    result = torchrun("-m", "fastgan.train", "--data-dir", str(tiny_mnist), "--out", str(run), "--resume", "auto",
                      "--batch-size", "16", "--epochs", "3", "--log-every", "2", "--gan", "gan", cwd=tmp_path,
                      succeeds=False)
    assert "the main process could not write" in result.stderr  # rank 1
    assert "while writing" in result.stderr and "checkpoint.pt.new" in result.stderr  # rank 0, the real error
    assert not (run / "checkpoint.pt").exists()
