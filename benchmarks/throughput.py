"""Training throughput of fastgan's modes against the seed's own loop, measured in one run.

    python -m benchmarks.throughput                                  # CPU: small default sizes
    python -m benchmarks.throughput --gan gan wgan_gp --mode eager compile graph --batch 64 16384 \
        --precision no bf16 --json throughput.json

Each row: training iterations/s and images/s after warm-up (CUDA events on a GPU, a host clock on a
CPU), for one variant x arch x mode x precision x batch size. The reference row of each variant x
arch is the seed's way at the seed's batch size (64): a torchvision DataLoader over PIL images with
ToTensor/Normalize, eager fp32 (no TF32), plain Adam, plain PyTorch ops, and a `.item()` per step
(its step is fastgan's eager step with plain PyTorch ops: G once per iteration where the seed's code
ran it twice on the same z, D once over real and fake where it ran twice, BCE as softplus; so the
reference is if anything faster than the seed's own loop, and the ratios understate the gain).
`x ref` is images/s over the reference's images/s. `seed cmd` projects the seed's command (50
epochs of 60,000 images at batch 64: 46,850 iterations) from the measured rate of batch-64 rows.
Data: the bundled 10,000-digit sample tiled to the full training set's 60,000 images (or more for
large batches), so epochs have the seed's length.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

import kernels
from fastgan.config import resolve
from fastgan.data import ResidentLoader, Split, bundled_sample
from fastgan.engine import Engine, build_engine
from fastgan.variants import VARIANTS

SEED_BATCH = 64
SEED_ITERATIONS = 50 * (60_000 // SEED_BATCH)  # the seed's command: 50 epochs, drop_last


@dataclass
class Row:
    gan: str
    arch: str
    mode: str  # the mode that ran ("reference" for the seed's loop)
    precision: str
    batch: int
    it_per_s: float
    images_per_s: float
    x_ref: float | None = None
    requested: str | None = None  # the mode asked for, when it fell back


def tiled_split(n: int) -> Split:
    """The bundled sample repeated to n images (throughput does not depend on which digits)."""
    sample = bundled_sample("train")
    reps = -(-n // len(sample))
    return Split(sample.images.repeat(reps, 1, 1)[:n], sample.labels.repeat(reps)[:n], "bundled sample, tiled")


def accelerator_for(device: str, precision: str) -> Accelerator:
    AcceleratorState._reset_state(True)  # Accelerate keeps one precision per process; rows change it
    return Accelerator(cpu=device == "cpu", mixed_precision=precision)


def timed(run: Callable[[int], object], device: torch.device, seconds: float, repeats: int = 3) -> float:
    """Median iterations/s over `repeats` timed chunks of about `seconds` each (after the caller's warm-up)."""
    def chunk(n: int, start: int) -> float:
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for i in range(start, start + n):
                run(i)
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for i in range(start, start + n):
            run(i)
        return time.perf_counter() - t0

    n, done = 10, 0
    elapsed = chunk(n, done)
    done += n
    n = max(10, min(200_000, int(n * seconds / max(elapsed, 1e-6))))
    rates = []
    for _ in range(repeats):
        rates.append(n / chunk(n, done))
        done += n
    return statistics.median(rates)


def fastgan_runner(gan: str, arch: str, mode: str, precision: str, batch: int,
                   device: str) -> tuple[Callable[[int], None], Engine, Accelerator]:
    """(run(i): one iteration of fastgan's training loop, already warmed up; its engine; its accelerator)."""
    accelerator = accelerator_for(device, precision)
    torch._dynamo.reset()  # each row compiles its own engine
    kernels.set_backend("auto")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    cfg = resolve({"gan": gan, "arch": arch, "mode": mode, "mixed_precision": precision, "batch_size": batch})
    engine = build_engine(cfg, accelerator)
    loader = ResidentLoader(tiled_split(max(60_000, 8 * batch)), batch, accelerator.device, seed=0)
    position = {"epoch": 0, "batch": 0}
    loader.start_epoch(0)

    def run(i: int) -> None:
        if position["batch"] == len(loader):  # host bookkeeping only: no sync
            position["epoch"], position["batch"] = position["epoch"] + 1, 0
            loader.start_epoch(position["epoch"])
        engine.iteration(loader, i)
        position["batch"] += 1

    for i in range(max(10, 2 * cfg.n_critic)):  # warm-up: compilation, graph capture, autotuning
        run(i)
    return (lambda i: run(i + 1_000)), engine, accelerator


def fastgan_row(gan: str, arch: str, mode: str, precision: str, batch: int, device: str, seconds: float) -> Row:
    run, engine, accelerator = fastgan_runner(gan, arch, mode, precision, batch, device)
    rate = timed(run, accelerator.device, seconds)
    return Row(gan, arch, engine.mode, precision, batch, rate, rate * batch,
               requested=mode if engine.mode != mode else None)


def reference_row(gan: str, arch: str, device: str, seconds: float) -> Row:
    """The seed's loop: DataLoader + PIL + ToTensor/Normalize, eager fp32, plain Adam, `.item()` per step."""
    from PIL import Image
    from torchvision import transforms

    accelerator = accelerator_for(device, "no")
    kernels.set_backend("torch")
    # PyTorch's defaults, the seed's: IEEE fp32 matmuls, TF32 convolutions
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    cfg = resolve({"gan": gan, "arch": arch, "mode": "eager", "kernels": "torch", "batch_size": SEED_BATCH})
    engine = build_engine(cfg, accelerator)
    engine.opt_g = torch.optim.Adam(engine.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    engine.opt_d = torch.optim.Adam(engine.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    split = tiled_split(60_000)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(split)

        def __getitem__(self, i):
            return to_tensor(Image.fromarray(split.images[i].numpy(), mode="L")), int(split.labels[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=SEED_BATCH, shuffle=True, drop_last=True)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))

    def run(i: int) -> None:
        x, y = next(batches)
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        stats = engine.step(x, y, i)
        for value in stats.values():
            value.item()  # the seed reads its losses every step

    for i in range(5):
        run(i)
    rate = timed(run, accelerator.device, seconds)
    kernels.set_backend("auto")
    return Row(gan, arch, "reference", "no", SEED_BATCH, rate, rate * SEED_BATCH)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def print_table(rows: list[Row], device: str) -> None:
    print(f"\nthroughput on {device_name(device)} (torch {torch.__version__})")
    header = f"{'gan':8} {'arch':5} {'mode':10} {'prec':5} {'batch':>7} {'it/s':>10} {'images/s':>13} {'x ref':>8} {'seed cmd':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mode = r.mode + ("*" if r.requested else "")
        ratio = f"{r.x_ref:,.1f}" if r.x_ref is not None else "-"
        seed = f"{SEED_ITERATIONS / r.it_per_s:,.1f}s" if r.batch == SEED_BATCH else "-"
        print(f"{r.gan:8} {r.arch:5} {mode:10} {r.precision:5} {r.batch:>7} {r.it_per_s:>10,.1f} "
              f"{r.images_per_s:>13,.0f} {ratio:>8} {seed:>9}")
    if any(r.requested for r in rows):
        print("* fell back from the requested mode (see the log line above)")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="fastgan: %(message)s")  # mode fallbacks say why
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="benchmarks.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gan", nargs="+", default=["gan", "wgan_gp"], choices=list(VARIANTS))
    parser.add_argument("--arch", nargs="+", default=["mlp"], choices=["mlp", "conv"])
    parser.add_argument("--mode", nargs="+", default=["eager", "compile", "graph"] if cuda else ["eager"],
                        choices=["eager", "compile", "graph"])
    parser.add_argument("--precision", nargs="+", default=["no"], choices=["no", "bf16"])
    parser.add_argument("--batch", nargs="+", type=int, default=[SEED_BATCH])
    parser.add_argument("--seconds", type=float, default=1.0 if cuda else 2.0, help="length of each timed chunk")
    parser.add_argument("--no-reference", action="store_true", help="skip the seed's loop (no ratios)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--json", default="throughput.json", help="where to write the rows")
    args = parser.parse_args(argv)

    rows: list[Row] = []

    def save() -> None:  # after every row: a run cut short by a time limit keeps what it measured
        with open(args.json, "w") as f:
            json.dump({"device": device_name(args.device), "torch": torch.__version__,
                       "rows": [asdict(r) for r in rows]}, f, indent=1)

    for gan, arch in itertools.product(args.gan, args.arch):
        reference = None if args.no_reference else reference_row(gan, arch, args.device, args.seconds)
        if reference:
            reference.x_ref = 1.0
            rows.append(reference)
            save()
            print(f"{gan}/{arch}/reference: {reference.it_per_s:,.1f} it/s", file=sys.stderr)
        for mode, precision, batch in itertools.product(args.mode, args.precision, args.batch):
            try:
                row = fastgan_row(gan, arch, mode, precision, batch, args.device, args.seconds)
            except Exception as e:  # one failing row must not lose the table
                print(f"{gan}/{arch}/{mode}/{precision}/{batch}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            if reference:
                row.x_ref = row.images_per_s / reference.images_per_s
            rows.append(row)
            save()
            print(f"{gan}/{arch}/{row.mode}/{precision}/batch {batch}: {row.it_per_s:,.1f} it/s"
                  + (f" ({row.x_ref:,.1f}x the reference)" if reference else ""), file=sys.stderr)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    print_table(rows, args.device)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
