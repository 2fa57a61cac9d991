"""Pictures from a trained run: a fresh sample grid, or latent interpolations.

    python -m fastgan.sample runs/gan-mlp-.../                 samples/sample.png
    python -m fastgan.sample runs/cgan-mlp-.../ --interpolate  samples/interpolate.png

Interpolation rows walk linearly between two random noise vectors; conditional variants keep the
label fixed along each row (row r: class r mod 10); infogan sweeps each continuous code instead.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch
from accelerate import Accelerator

from fastgan import artifacts
from fastgan.config import ConfigError
from fastgan.engine import load_engine
from fastgan.models import noise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgan.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory or a checkpoint file")
    parser.add_argument("--interpolate", action="store_true", help="latent interpolations instead of a sample grid")
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="columns of an interpolation row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.steps < 2:
        parser.exit(2, f"{parser.prog}: error: --rows must be positive and --steps at least 2\n")
    try:
        path, _, engine = load_engine(args.run, Accelerator())
    except (artifacts.CheckpointError, ConfigError) as e:  # ConfigError: the saved settings no longer resolve
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    device = engine.accelerator.device
    generator = torch.Generator().manual_seed(args.seed)
    z = lambda n: noise(n, engine.z_dim, device, generator)  # noqa: E731
    if args.interpolate:
        grids, stem = engine.variant.interpolation_latents(z(args.rows), z(args.rows), args.steps), "interpolate"
    else:
        grids, stem = engine.variant.grid_latents(z(100)), "sample"
    out_dir = path.parent / "samples"
    out_dir.mkdir(exist_ok=True)
    for name, (latent, nrow) in grids.items():
        file = out_dir / f"{stem}{'_' + name if name else ''}.png"
        artifacts.save_grid(engine.samples(latent), file, nrow)
        print(file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
