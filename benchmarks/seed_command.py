"""The seed's command end to end: 50 epochs of 60,000 digits at batch 64 (46,850 iterations), each
variant as a fresh `python -m fastgan.train` process timed from its start to its exit — imports,
building the engine, the CUDA-graph capture or compilation, every epoch's end (grid, checkpoint),
the GIF — where `benchmarks.throughput` projects it from a steady-state rate. Triton's compiled
kernels and autotuning choices come from its disk cache as earlier runs left it. Data: the bundled
sample tiled to 60,000 digits, written as IDX files (read as full MNIST would be).

    python -m benchmarks.seed_command --gan gan wgan_gp        # a GPU session
    python -m benchmarks.seed_command --epochs 1 --images 640  # a CPU check that it runs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from benchmarks.throughput import SEED_BATCH, tiled_split
from fastgan.data import bundled_sample, write_idx
from fastgan.variants import VARIANTS


def write_mnist(directory: Path, n_train: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, split in (("train", tiled_split(n_train)), ("t10k", bundled_sample("test"))):
        write_idx(directory / f"{prefix}-images-idx3-ubyte", split.images.numpy())
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", split.labels.numpy())
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_command", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gan", nargs="+", default=["gan"], choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--images", type=int, default=60_000, help="training digits per epoch")
    parser.add_argument("--json", help="write the results here")
    args, train_args = parser.parse_known_args(argv)  # the rest goes to fastgan.train (--mode, ...)
    iterations = args.epochs * (args.images // SEED_BATCH)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_mnist(Path(tmp) / "mnist", args.images)
        for gan in args.gan:
            command = [sys.executable, "-m", "fastgan.train", "--gan", gan, "--data-dir", str(data),
                       "--epochs", str(args.epochs), "--batch-size", str(SEED_BATCH), "--out", str(Path(tmp) / gan),
                       *train_args]
            start = time.perf_counter()
            status = subprocess.run(command).returncode
            seconds = time.perf_counter() - start
            results.append({"gan": gan, "epochs": args.epochs, "iterations": iterations, "seconds": seconds,
                            "status": status, "args": train_args})
            print(f"{gan}: {args.epochs} epochs, {iterations:,} iterations in {seconds:.1f} s "
                  f"({iterations / seconds:,.0f} it/s including the process's start-up and epoch ends)"
                  + ("" if status == 0 else f" — exit status {status}"), file=sys.stderr, flush=True)
            if args.json:  # after every run: a time limit keeps what was measured
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return max(r["status"] for r in results)


if __name__ == "__main__":
    raise SystemExit(main())
