"""IDX reading, source selection, the bundled sample's split, and the device-resident loader."""
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan import data
from fastgan.data import DataError, ResidentLoader, Split, bundled_sample, load_split, read_idx, write_idx
from helpers import subset, write_mnist_dir


# --- IDX files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.randint(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", images, compress)
    assert np.array_equal(read_idx(path, 3), images)


@pytest.mark.parametrize("compress", [False, True])
def test_data_dir_plain_and_torchvision_layout(tmp_path, compress):
    flat = write_mnist_dir(tmp_path / "flat", 50, 20, compress)
    nested = write_mnist_dir(tmp_path / "tv" / "MNIST" / "raw", 50, 20, compress)
    for root in (flat, tmp_path / "tv"):
        train = load_split("mnist", "train", root)
        assert train.images.shape == (50, 28, 28) and train.images.dtype == torch.uint8
        assert torch.equal(train.labels, torch.from_numpy(subset(bundled_sample("train"), 50)[1]).long())
        assert train.labels.unique().numel() > 5
        assert len(load_split("mnist", "test", root)) == 20
    assert nested.is_dir()


def test_bad_magic(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + raw[4:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: wrong IDX magic number 00000801, expected 00000803"):
        load_split("mnist", "train", d)


def test_truncated_file(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated or padded: header promises 7840 data bytes"):
        load_split("mnist", "train", d)


def test_truncated_gzip(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10, compress=True)
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read"):
        load_split("mnist", "train", d)


def test_corrupt_gzip_and_a_forged_header_are_refused_in_one_line(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10, compress=True)
    path = d / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:40] = bytes(20)  # inside the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read"):
        load_split("mnist", "train", d)
    forged = tmp_path / "forged-idx3-ubyte"
    forged.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2**22, 2**21, 2**21))  # 2**64 bytes promised
    with pytest.raises(DataError, match=r"header promises 18446744073709551616 data bytes"):
        read_idx(forged, 3)


def test_empty_file(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    (d / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong IDX magic number \(empty file\)"):
        load_split("mnist", "train", d)


def test_count_mismatch(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(9, dtype=np.uint8))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_split("mnist", "train", d)


def test_wrong_image_size(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    write_idx(d / "train-images-idx3-ubyte", np.zeros((10, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        load_split("mnist", "train", d)


def test_missing_labels_file(tmp_path):
    d = write_mnist_dir(tmp_path, 10, 10)
    (d / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_split("mnist", "train", d)


def test_explicit_data_dir_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("an explicit --data-dir must not download"))
    with pytest.raises(DataError, match="no such directory"):
        load_split("mnist", "train", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_split("mnist", "train", tmp_path / "empty")


# --- source selection without --data-dir ----------------------------------------------------------
def offline(*args):
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")


def test_offline_mnist_falls_back_to_the_bundled_sample_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(data, "_download", offline)
    split = load_split("mnist", "train", download_root=tmp_path)
    assert len(split) == len(bundled_sample("train")) and "bundled" in split.source
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "SAMPLE of 10,000 real MNIST digits" in warnings[0].getMessage()
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("one failed download per process is enough"))
    assert len(load_split("mnist", "test", download_root=tmp_path)) == len(bundled_sample("test"))
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_offline_fashion_mnist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataError, match="fashion-mnist is not in .* and could not be downloaded"):
        load_split("fashion-mnist", "train", download_root=tmp_path)


def test_local_data_folder_is_used_before_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("./data holds the set: no download"))
    write_mnist_dir(tmp_path / "FashionMNIST" / "raw", 30, 10)
    assert len(load_split("fashion-mnist", "train", download_root=tmp_path)) == 30


def test_bare_idx_files_in_the_default_folder_are_not_taken_for_a_dataset(tmp_path, monkeypatch):
    """./data/*.idx does not say what it holds (fashion-mnist read MNIST from it): only torchvision's
    layout there, <Class>/raw, where its download puts it."""
    monkeypatch.setattr(data, "_download", offline)
    write_mnist_dir(tmp_path, 30, 10)
    with pytest.raises(DataError, match="fashion-mnist is not in"):
        load_split("fashion-mnist", "train", download_root=tmp_path)


def test_a_download_that_leaves_no_files_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda dataset, root: None)  # "succeeded"
    with pytest.raises(DataError, match="fashion-mnist: downloaded, but no train-images-idx3-ubyte"):
        load_split("fashion-mnist", "train", download_root=tmp_path)


def test_a_failed_download_leaves_no_partial_file_behind(tmp_path, monkeypatch):
    import torchvision

    class HalfDownloaded:
        def __init__(self, root, train, download):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
            raise TimeoutError("timed out")

    monkeypatch.setattr(torchvision.datasets, "MNIST", HalfDownloaded)
    monkeypatch.setattr(data, "_FAILED_DOWNLOADS", {})
    assert "bundled" in load_split("mnist", "train", download_root=tmp_path / "data").source
    assert not (tmp_path / "data").exists()
    data._FAILED_DOWNLOADS.clear()  # a new process: it tries again, and falls back again
    assert "bundled" in load_split("mnist", "train", download_root=tmp_path / "data").source


def test_a_successful_download_is_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda dataset, root: write_mnist_dir(root / "MNIST" / "raw", 40, 10, True))
    assert len(load_split("mnist", "train", download_root=tmp_path)) == 40


# --- the bundled sample ---------------------------------------------------------------------------
def test_bundled_split_is_fixed_stratified_and_disjoint():
    train, test = bundled_sample("train"), bundled_sample("test")
    assert len(train) + len(test) == 10_000
    counts = np.array([1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978])  # the sample's README
    assert np.array_equal(test.labels.bincount().numpy(), np.round(counts * 0.1).astype(int))
    assert torch.equal(bundled_sample("test").images, test.images)  # same split every call
    train_rows = {bytes(row) for row in train.images.flatten(1).numpy()}
    assert not any(bytes(row) in train_rows for row in test.images.flatten(1).numpy())


# --- the loader -----------------------------------------------------------------------------------
def small_split(n=100):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    return Split(images, torch.arange(n) % 10, "test")  # image i is filled with the value i


def index_of(images):
    return ((images[:, 0, 0, 0] + 1) * 127.5).round().long()


def test_every_index_once_per_epoch_and_last_partial_batch_dropped():
    loader = ResidentLoader(small_split(100), batch_size=16, device="cpu", seed=3)
    assert len(loader) == 6
    seen = torch.cat([index_of(x) for x, _ in loader.epoch(0)])
    assert len(seen) == 96 and seen.unique().numel() == 96
    assert not torch.equal(seen, torch.cat([index_of(x) for x, _ in loader.epoch(1)]))  # reshuffled
    assert torch.equal(seen, torch.cat([index_of(x) for x, _ in loader.epoch(0)]))  # epoch order is (seed, epoch)


def test_scaling_device_and_labels():
    split = bundled_sample("test")
    loader = ResidentLoader(split, batch_size=50, device="cpu")
    x, y = next(loader.epoch(0))
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert x.min() == -1 and x.max() == 1
    # labels travel with their own images
    order = loader.permutation(0)[:50]
    assert torch.equal(y, split.labels[order])
    assert torch.equal(((x + 1) * 127.5).round().to(torch.uint8).squeeze(1), split.images[order])


def test_ranks_take_disjoint_slices_whose_union_is_a_prefix_of_the_epoch():
    split = small_split(100)
    ranks = [ResidentLoader(split, 10, "cpu", seed=5, rank=r, world_size=4) for r in range(4)]
    assert all(len(r) == 2 for r in ranks)  # 100 // 40
    seen = [torch.cat([index_of(x) for x, _ in r.epoch(2)]) for r in ranks]
    assert torch.cat(seen).unique().numel() == 80
    single = ResidentLoader(split, 40, "cpu", seed=5)  # one process with the global batch
    for i, (x, _) in enumerate(single.epoch(2)):
        assert torch.equal(index_of(x), torch.cat([s[i * 10:(i + 1) * 10] for s in seen]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_epoch_order_is_the_same_on_any_device():
    """A checkpoint written on one kind of device resumes mid-epoch on another with the same prefix."""
    orders = [ResidentLoader(small_split(100), 10, device, seed=4).permutation(3).cpu() for device in ("cpu", "cuda")]
    assert torch.equal(*orders)


def test_start_skips_global_batches():
    loader = ResidentLoader(small_split(100), 10, "cpu", seed=1, rank=1, world_size=2)
    everything = [index_of(x) for x, _ in loader.epoch(0)]
    assert all(torch.equal(a, index_of(b)) for a, (b, _) in zip(everything[3:], loader.epoch(0, start=3)))


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(DataError, match="--batch-size 51 x 2 processes is larger than the 100 training images"):
        ResidentLoader(small_split(100), 51, "cpu", world_size=2)


def test_real_download_attempt_falls_back_cleanly(tmp_path):
    # No monkeypatching: torchvision really tries its mirrors. Offline (CI) it fails fast and the
    # bundled sample is used, leaving no empty folders behind; online it gets the full set.
    split = load_split("mnist", "train", download_root=tmp_path / "data")
    if "bundled" in split.source:
        assert not (tmp_path / "data").exists()
    else:
        assert len(split) == 60_000
