"""pytest-benchmark: one training iteration per variant and mode, and a batch from the resident loader
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


MODES = ["eager", "compile", "graph"] if torch.cuda.is_available() else ["eager", "compile"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_iteration(benchmark, name, mode):
    """One training iteration (D step + G step: n_critic is set to 1), MLP, batch 64."""
    torch._dynamo.reset()
    accelerator = Accelerator()
    cfg = resolve({"gan": name, "batch_size": BATCH, "n_critic": 1, "mode": mode})
    engine = build_engine(cfg, accelerator)
    if engine.mode != mode:
        pytest.skip(f"{mode} mode falls back to {engine.mode} here")
    loader = ResidentLoader(bundled_sample("train"), BATCH, accelerator.device)
    steps = itertools.count()

    def iteration():
        i = next(steps)
        if i % len(loader) == 0:
            loader.start_epoch(i // len(loader))
        stats = engine.iteration(loader, i)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return stats

    for _ in range(5):  # compile, capture, autotune
        iteration()
    benchmark.group = f"iteration-{mode}"
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
