"""MNIST-style data: IDX files or the bundled sample in, a device-resident batch loader out.

The whole split lives on the training device as one normalised tensor; an epoch is one on-device
permutation, and a batch is an index into it. No DataLoader, no PIL, no workers, no host sync.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import socket
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("fastgan")

# dataset name -> torchvision's class and folder name
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
BUNDLED_SAMPLE = "mnist10k.npz"
SAMPLE_TEST_FRACTION = 0.1  # per class, held out from the bundled sample
SAMPLE_SPLIT_SEED = 0


_FAILED_DOWNLOADS: dict[tuple[str, Path], str] = {}  # one attempt and one warning per process


class DataError(ValueError):
    """Data that cannot be used; the message names the file and what is wrong, in one line."""


@dataclass
class Split:
    images: Tensor  # (N, 28, 28) uint8, 0 = background
    labels: Tensor  # (N,) int64 in [0, 10)
    source: str  # where it came from, for the log and the run's config

    def __len__(self) -> int:
        return len(self.labels)


# --- IDX files ------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An unsigned-byte IDX file, as the MNIST distribution ships them (gzipped: path + ".gz")."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (magic 0x0000 08 ndim, big-endian uint32 dims, then the bytes)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: a truncated stream is EOFError, corrupt data zlib.error
        raise DataError(f"{path}: cannot read ({e})") from None
    expected_magic = bytes([0, 0, 0x08, ndim])
    if raw[:4] != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number {raw[:4].hex() or '(empty file)'}, expected {expected_magic.hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(dims)  # Python ints: a forged header cannot overflow it
    if len(raw) - header != size:
        raise DataError(f"{path}: truncated or padded: header promises {size} data bytes {dims}, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_path(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(root: Path, dataset: str, flat: bool = True) -> Path | None:
    """The folder under `root` holding the IDX files: torchvision's <Class>/raw (or <Class>), or, if
    `flat`, root itself (a folder of bare IDX files does not say which dataset it holds)."""
    for directory in ((root,) if flat else ()) + (root / DATASETS[dataset] / "raw", root / DATASETS[dataset]):
        if _idx_path(directory, IDX_FILES["train"][0]) is not None:
            return directory
    return None


def read_idx_split(directory: Path, split: str) -> Split:
    image_name, label_name = IDX_FILES[split]
    paths = [_idx_path(directory, image_name), _idx_path(directory, label_name)]
    for path, name in zip(paths, (image_name, label_name)):
        if path is None:
            raise DataError(f"{directory}: missing {name} (or {name}.gz)")
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels ({paths[0].name}, {paths[1].name})")
    if len(labels) and labels.max() >= 10:
        raise DataError(f"{paths[1]}: label {labels.max()} outside 0-9")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)), f"IDX files in {directory}")


# --- the bundled sample ---------------------------------------------------------------------------
def bundled_sample(split: str) -> Split:
    """10,000 real MNIST digits shipped with the package (see README), split per class with a fixed
    seed: 10% of each class held out as "test", the rest "train"."""
    with resources.files("fastgan.assets").joinpath(BUNDLED_SAMPLE).open("rb") as f:
        npz = np.load(io.BytesIO(f.read()))
        images, labels = npz["images"], npz["labels"].astype(np.int64)
    rng = np.random.default_rng(SAMPLE_SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: round(SAMPLE_TEST_FRACTION * len(members))]] = True
    keep = test if split == "test" else ~test
    return Split(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]), f"bundled 10k MNIST sample ({split})")


# --- choosing a source ----------------------------------------------------------------------------
def _download(dataset: str, root: Path) -> None:
    """torchvision's download into root; raises when the network does not answer."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, DATASETS[dataset])
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a dead network should fail over, not hang
    existed = {p for p in root.rglob("*")} | {root} if root.exists() else set()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints each mirror it tries
            for train in (True, False):
                dataset_class(str(root), train=train, download=True)
    except BaseException:
        # A failed download leaves no trace: a partial file would be found, and refused, next time.
        for path in sorted((p for p in [root, *root.rglob("*")] if p not in existed), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise
    finally:
        socket.setdefaulttimeout(timeout)


def data_source(dataset: str, data_dir: str | Path | None = None, download_root: str | Path = "data") -> Path | None:
    """Where the dataset is read from: its IDX folder, or None for the bundled sample. An explicit
    data_dir must hold the data (never silently replaced); otherwise download_root in torchvision's
    layout, then a download into it, then (mnist only) the bundled sample with a warning. Decided once
    per run (by the main process: every process must read the same data)."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"--data-dir {root}: no such directory")
        directory = find_idx_dir(root, dataset)
        if directory is None:
            raise DataError(f"--data-dir {root}: no {IDX_FILES['train'][0]}[.gz] there or in {DATASETS[dataset]}/raw")
        return directory
    root = Path(download_root)
    directory = find_idx_dir(root, dataset, flat=False)
    if directory is not None:
        return directory
    try:
        if (dataset, root) in _FAILED_DOWNLOADS:  # tried once in this process already: do not retry
            raise RuntimeError(_FAILED_DOWNLOADS[(dataset, root)])
        _download(dataset, root)
    except (OSError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if dataset != "mnist":
            raise DataError(f"{dataset} is not in {root} and could not be downloaded ({reason}); pass --data-dir") from None
        if (dataset, root) not in _FAILED_DOWNLOADS:
            log.warning("MNIST could not be downloaded (%s): using the bundled SAMPLE of 10,000 real MNIST digits "
                        "(9,001 train / 999 test), not the full 70,000. Pass --data-dir for the full set.", reason)
            _FAILED_DOWNLOADS[(dataset, root)] = reason
        return None
    directory = find_idx_dir(root, dataset, flat=False)
    if directory is None:  # the download said it succeeded
        raise DataError(f"{dataset}: downloaded, but no {IDX_FILES['train'][0]} in {root / DATASETS[dataset] / 'raw'}")
    return directory


def read_split(source: Path | None, split: str) -> Split:
    """A split from a data_source(): its IDX folder, or the bundled sample for None."""
    return bundled_sample(split) if source is None else read_idx_split(source, split)


def load_split(dataset: str, split: str = "train", data_dir: str | Path | None = None, download_root: str | Path = "data") -> Split:
    """data_source() then read_split(), for one process."""
    return read_split(data_source(dataset, data_dir, download_root), split)


# --- the device-resident loader -------------------------------------------------------------------
class ResidentLoader:
    """Batches of (images in [-1, 1] (B, 1, 28, 28), labels (B,)) by indexing device tensors.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run
    sees exactly the batches it would have seen. Under data parallelism every rank draws the same
    permutation; global batch i is the slice [i·B·W, (i+1)·B·W) of it and rank r takes the r-th B of
    that. The ranks' batches are disjoint, and what an epoch has consumed is always a prefix of the
    permutation, so a checkpoint resumes under any process count. The last partial batch is dropped.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device | str, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size * world_size > len(split):
            raise DataError(f"--batch-size {batch_size} x {world_size} processes is larger than the "
                            f"{len(split)} training images ({split.source})")
        self.images = split.images.to(device).unsqueeze(1).float().div_(127.5).sub_(1)  # (N, 1, 28, 28)
        self.labels = split.labels.to(device)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        # The epoch's order and the position in it, on the device (see start_epoch).
        self.order = torch.arange(len(self.images), device=self.images.device)
        self.cursor = torch.zeros((), dtype=torch.long, device=self.images.device)
        self.offsets = rank * batch_size + torch.arange(batch_size, device=self.images.device)

    def __len__(self) -> int:
        return len(self.images) // (self.batch_size * self.world_size)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> Tensor:
        """The epoch's order, (N,) indices on the device, the same on every rank and every kind of
        device (drawn on the CPU, copied once per epoch), so a checkpoint resumes mid-epoch anywhere."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=generator).to(self.images.device)

    def start_epoch(self, epoch: int, start: int = 0) -> None:
        """Point next_batch() at global batch `start` of the epoch: the epoch's order goes into a fixed
        device buffer and the position into a device counter, so next_batch() needs no host value and
        can be captured in a CUDA graph."""
        self.order.copy_(self.permutation(epoch))
        self.cursor.fill_(start)

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """This rank's share of the global batch at the cursor, and advance the cursor (device ops only)."""
        idx = self.order[self.cursor * self.global_batch + self.offsets]
        self.cursor.add_(1)
        return self.images[idx], self.labels[idx]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of the epoch from global batch `start` on (a resumed run skips what it did)."""
        self.start_epoch(epoch, start)
        for _ in range(start, len(self)):
            yield self.next_batch()
