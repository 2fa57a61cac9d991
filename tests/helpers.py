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


def write_mnist_dir(directory: Path, n_train: int, n_test: int = 100, compress: bool = False) -> Path:
    """A small MNIST-layout folder made from the bundled real digits."""
    directory.mkdir(parents=True, exist_ok=True)
    train, test = bundled_sample("train"), bundled_sample("test")
    for split, n, prefix in ((train, n_train, "train"), (test, n_test, "t10k")):
        write_idx(directory / f"{prefix}-images-idx3-ubyte", split.images[:n].numpy(), compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", split.labels[:n].numpy(), compress)
    return directory
