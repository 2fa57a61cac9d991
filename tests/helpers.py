"""Test helpers: MNIST-layout folders made from the bundled real digits."""
from pathlib import Path

import numpy as np

from fastgan.data import bundled_sample, write_idx


def subset(split, n: int):
    """n digits of every class (the bundled sample is sorted by class), in a fixed order."""
    order = np.random.default_rng(0).permutation(len(split))[:n]
    return split.images[order].numpy(), split.labels[order].numpy()


def write_mnist_dir(directory: Path, n_train: int, n_test: int = 100, compress: bool = False) -> Path:
    """A small MNIST-layout folder made from the bundled real digits."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, prefix in ((bundled_sample("train"), n_train, "train"), (bundled_sample("test"), n_test, "t10k")):
        images, labels = subset(split, n)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return directory
