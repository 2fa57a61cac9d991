"""Sample quality against a small MNIST classifier that fastgan trains itself (never downloaded).

    python -m fastgan.evaluate runs/gan-mlp-.../            (or a checkpoint.pt)

Metrics on N generated samples, each printed beside its real-vs-real value (train split against the
held-out split), which is the best a generator can hope for with this classifier:
- FD-LeNet: Fréchet distance between classifier-feature Gaussians of samples and held-out digits;
- score: exp(E KL(p(y|x) ‖ p(y))), an Inception-style score in [1, 10];
- coverage: digits predicted for at least 1% of samples (of 10), and KL(class histogram ‖ uniform);
- label accuracy (cgan, acgan): how often the classifier reads the label the generator was asked for.
Only comparable under one fixed classifier: it is cached with the hash of the data it was trained on.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from fastgan.data import Split

N_CLASSES = 10
COVERAGE_SHARE = 0.01


# --- the classifier -------------------------------------------------------------------------------
class LeNet(nn.Module):
    """conv 32 -> conv 64 -> fc 128 (the features) -> 10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, N_CLASSES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x in [-1, 1] (B, 1, 28, 28) -> (features (B, 128), logits (B, 10))."""
        h = self.features(x)
        return h, self.head(h)


def _scaled(images_u8: Tensor) -> Tensor:
    return images_u8.unsqueeze(1).float() / 127.5 - 1


def data_hash(images: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


CLASSIFIER_STEPS = 850  # at batch 128: 13 epochs of the 9,001-digit sample (97-99% held-out), 2 of full MNIST


def train_classifier(images: Tensor, labels: Tensor, epochs: int | None = None, batch_size: int = 128, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True) -> LeNet:
    """Adam, light random shifts (±2 px) so the classifier does not key on exact pixel positions."""
    if epochs is None:
        epochs = max(2, math.ceil(CLASSIFIER_STEPS * batch_size / len(images)))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LeNet().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all, y_all = _scaled(images).to(device), labels.to(device)
    steps = epochs * (len(x_all) // batch_size)
    with tqdm(total=steps, desc="training the evaluation classifier", disable=not progress, file=sys.stderr) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=generator).to(device)
            for i in range(len(x_all) // batch_size):
                idx = order[i * batch_size:(i + 1) * batch_size]
                dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
                x = torch.roll(x_all[idx], shifts=(dx, dy), dims=(2, 3))
                loss = F.cross_entropy(model(x)[1], y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
    return model.eval()


def cache_dir() -> Path:
    return Path(os.environ.get("FASTGAN_CACHE", Path.home() / ".cache" / "fastgan"))


def load_classifier(train_images: Tensor, train_labels: Tensor, device: str | torch.device = "cpu") -> LeNet:
    """The classifier for this training data: from the cache, or trained now and cached."""
    from fastgan import artifacts

    path = cache_dir() / f"lenet-{data_hash(train_images, train_labels)}.pt"
    model = LeNet()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()
    model = train_classifier(train_images, train_labels, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_write(path) as f:
        torch.save(model.state_dict(), f)
    return model


@torch.no_grad()
def classify(model: LeNet, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(features (N, 128), probabilities (N, 10)) in float64 on the CPU, for images in [-1, 1]."""
    device = next(model.parameters()).device
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        h, logits = model(images[i:i + batch_size].to(device).float())
        feats.append(h.double().cpu())
        probs.append(logits.double().softmax(1).cpu())
    return torch.cat(feats), torch.cat(probs)


# --- the metrics ----------------------------------------------------------------------------------
def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½) between Gaussians fitted to two feature sets (float64)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((Σa Σb)^½) = Σ √eig(√Σa Σb √Σa), a symmetric PSD form that eigh handles stably.
    vals, vecs = torch.linalg.eigh(cov_a)
    sqrt_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def classifier_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))): 10 for confident, balanced predictions, 1 for one repeated class."""
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp(min=1e-12).log() - marginal.clamp(min=1e-12).log())).sum(1)
    return float(kl.mean().exp())


def coverage(probs: Tensor) -> tuple[int, float]:
    """(digits predicted for ≥ 1% of the samples, KL(predicted-class histogram ‖ uniform))."""
    share = torch.bincount(probs.argmax(1), minlength=N_CLASSES).double() / len(probs)
    kl = (share[share > 0] * (share[share > 0] * N_CLASSES).log()).sum()
    return int((share >= COVERAGE_SHARE).sum()), float(kl)


@dataclass
class Metrics:
    fd: float
    score: float
    coverage: int
    class_kl: float
    label_accuracy: float | None = None


def metrics(model: LeNet, images: Tensor, reference_features: Tensor, labels: Tensor | None = None) -> Metrics:
    feats, probs = classify(model, images)
    covered, kl = coverage(probs)
    accuracy = None if labels is None else float((probs.argmax(1) == labels.cpu()).double().mean())
    return Metrics(frechet_distance(feats, reference_features), classifier_score(probs), covered, kl, accuracy)


# --- evaluating a run -----------------------------------------------------------------------------
def evaluate_engine(engine, model: LeNet, reference_features: Tensor, n: int, seed: int = 0) -> Metrics:
    """Metrics of the engine's generator (its EMA copy if it keeps one) on n fresh samples; conditional
    variants are asked for an equal number of each label."""
    device = engine.accelerator.device
    with _own_rng(device, seed):
        labels = torch.arange(n, device=device) % N_CLASSES
        images = torch.cat([engine.samples(engine.variant.latent(engine.noise(len(chunk)), chunk)[0])
                            for chunk in labels.split(1000)])
    return metrics(model, images, reference_features, labels if engine.variant.conditional else None)


@contextlib.contextmanager
def _own_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Evaluation draws from its own seeded stream and leaves the training RNG exactly as it was
    (a run evaluated along the way trains, and resumes, exactly like one that is not)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def real_floor(model: LeNet, train_images: Tensor, test_images: Tensor, n: int) -> tuple[Metrics, Tensor]:
    """Real-vs-real metrics (n train digits, drawn at random with a fixed seed, against the held-out
    split) and the held-out features. Not the first n: a split may be stored sorted by class."""
    test_feats, _ = classify(model, _scaled(test_images))
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:n]
    return metrics(model, _scaled(train_images[pick]), test_feats), test_feats


class Evaluator:
    """Evaluation during training: the classifier, the held-out features and the real floor, once."""

    def __init__(self, train: "Split", test: "Split", device: str | torch.device, n: int = 10_000):
        with _own_rng(torch.device(device), 0):  # building (or training) the classifier draws random numbers
            self.model = load_classifier(train.images, train.labels, device)
        self.floor, self.reference = real_floor(self.model, train.images, test.images, n)
        self.n = n

    def __call__(self, engine) -> Metrics:
        return evaluate_engine(engine, self.model, self.reference, self.n)


def format_table(rows: dict[str, Metrics], floor: Metrics) -> str:
    lines = [f"{'':<14}{'FD-LeNet':>10}{'score':>8}{'coverage':>10}{'class KL':>10}{'label acc':>11}"]
    for name, m in [*rows.items(), ("real vs real", floor)]:
        acc = f"{m.label_accuracy:.3f}" if m.label_accuracy is not None else "-"
        lines.append(f"{name:<14}{m.fd:>10.2f}{m.score:>8.2f}{m.coverage:>8}/10{m.class_kl:>10.3f}{acc:>11}")
    return "\n".join(lines)


def evaluate_run(target: str | Path, n: int = 10_000, data_dir: str | None = None) -> tuple[Metrics, Metrics, Path]:
    """Load a run's newest checkpoint, sample, score; write metrics.json beside it."""
    from accelerate import Accelerator

    from fastgan import artifacts
    from fastgan.data import data_source, read_split
    from fastgan.engine import load_engine

    accelerator = Accelerator()
    path, checkpoint, engine = load_engine(target, accelerator)
    cfg = checkpoint["config"]
    source = data_source(cfg["dataset"], data_dir or cfg["data_dir"])
    train, test = read_split(source, "train"), read_split(source, "test")
    model = load_classifier(train.images, train.labels, accelerator.device)
    floor, test_feats = real_floor(model, train.images, test.images, n)
    result = evaluate_engine(engine, model, test_feats, n)
    artifacts.write_json(path.parent / "metrics.json", {
        "checkpoint": str(path), "step": checkpoint["step"], "samples": n, "data": train.source,
        "generated": asdict(result), "real_vs_real": asdict(floor),
    })
    return result, floor, path.parent


def main(argv: Sequence[str] | None = None) -> int:
    from fastgan import artifacts
    from fastgan.config import ConfigError
    from fastgan.data import DataError

    parser = argparse.ArgumentParser(prog="fastgan.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory or a checkpoint file")
    parser.add_argument("--samples", type=int, default=10_000, help="generated samples to score (default 10000)")
    parser.add_argument("--data-dir", default=None, help="where the real data is (default: the run's)")
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.exit(2, f"{parser.prog}: error: --samples must be at least 2, got {args.samples}\n")
    try:
        result, floor, run_dir = evaluate_run(args.run, args.samples, args.data_dir)
    except (artifacts.CheckpointError, ConfigError, DataError) as e:  # ConfigError: the saved settings no longer resolve
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(format_table({run_dir.name: result}, floor))
    print(f"metrics.json written to {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
