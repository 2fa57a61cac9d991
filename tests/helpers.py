"""Test helpers: IDX files and MNIST-layout folders made from the bundled real digits."""
import gzip
import struct
from pathlib import Path

import numpy as np

from fastgan.data import bundled_sample


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An unsigned-byte IDX file, as the MNIST distribution ships them."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


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
