"""pytest-benchmark: one eager training iteration per variant, and a batch from the resident loader
against torchvision's DataLoader over PIL images (the seed's input pipeline)."""
import itertools

import pytest
import torch
from accelerate import Accelerator

from fastgan.config import resolve
from fastgan.data import ResidentLoader, bundled_sample
from fastgan.engine import build_engine
from fastgan.variants import VARIANTS

BATCH = 64


@pytest.mark.parametrize("name", list(VARIANTS))
def test_iteration(benchmark, name):
    accelerator = Accelerator()
    cfg = resolve({"gan": name, "batch_size": BATCH, "n_critic": 1})
    engine = build_engine(cfg, accelerator)
    loader = ResidentLoader(bundled_sample("train"), BATCH, accelerator.device)
    real, y = next(loader.epoch(0))

    def iteration():
        stats = engine.step(real, y, 0)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return stats

    benchmark.group = "iteration"
    benchmark(iteration)


def test_resident_batch(benchmark):
    loader = ResidentLoader(bundled_sample("train"), BATCH, "cpu")
    batches = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    benchmark.group = "batch"
    benchmark(lambda: next(batches))


def test_dataloader_batch(benchmark):
    from PIL import Image
    from torchvision import transforms

    sample = bundled_sample("train")

    class PILDataset(torch.utils.data.Dataset):
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

        def __len__(self):
            return len(sample)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(sample.images[i].numpy(), mode="L")), int(sample.labels[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=BATCH, shuffle=True, drop_last=True)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    benchmark.group = "batch"
    benchmark.pedantic(lambda: next(batches), rounds=100)
