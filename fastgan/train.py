"""Train one GAN variant on MNIST.

    python -m fastgan.train --gan wgan_gp
    accelerate launch -m fastgan.train --gan wgan_gp        (accelerate launch --cpu ... on a CPU)

Reads top to bottom: settings -> data -> networks -> (resume) -> the loop -> what the run leaves.
"""
from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import torch

import kernels
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from fastgan import artifacts
from fastgan.config import MODEL_KEYS, Config, ConfigError, parse_args, resolve
from fastgan.data import DataError, ResidentLoader, Split, load_split
from fastgan.engine import build_engine

log = logging.getLogger("fastgan")
GRID_NOISE_ROWS = 100  # the fixed noise behind every epoch's grid (a 10x10 grid)


# --- settings, checked before any work -----------------------------------------------------------
def resolve_run(explicit: dict[str, Any]) -> tuple[Config, dict[str, Any] | None]:
    """The run's config, and the checkpoint to resume from (refused if it trained other networks)."""
    if "resume" not in explicit:
        return resolve(explicit), None
    checkpoint = artifacts.load_checkpoint(explicit["resume"])
    saved = checkpoint["config"]
    for key in MODEL_KEYS:
        if key in explicit and explicit[key] != saved[key]:
            raise ConfigError(f"--resume {explicit['resume']} trained --{key.replace('_', '-')} {saved[key]}, "
                              f"not {explicit[key]}; start a new run instead")
    return resolve(explicit, base=saved), checkpoint


def run_directory(cfg: Config, explicit: dict[str, Any]) -> Path:
    """--out if given; else, resuming, the checkpoint's folder; else a new runs/<gan>-<arch>-<time>."""
    if "out" in explicit:
        run_dir = Path(explicit["out"])
    elif "resume" in explicit:
        return Path(explicit["resume"]).parent
    else:
        run_dir = Path("runs") / f"{cfg.gan}-{cfg.arch}-{datetime.now():%Y%m%d-%H%M%S}"
    if "resume" not in explicit and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--out {run_dir} already holds a run; pass --resume {run_dir / 'checkpoint.pt'} or another --out")
    return run_dir


# --- the run --------------------------------------------------------------------------------------
def train(cfg: Config, split: Split, accelerator: Accelerator, run_dir: Path, checkpoint: dict[str, Any] | None) -> None:
    main_process = accelerator.is_main_process
    set_seed(cfg.seed, device_specific=True)  # noise differs across ranks; DDP syncs the initial weights

    engine = build_engine(cfg, accelerator, checkpoint)
    variant = engine.variant
    start_epoch, step = (checkpoint["epoch"], checkpoint["step"]) if checkpoint else (0, 0)
    if checkpoint is not None:
        artifacts.set_rng_state(checkpoint["rng"])  # after building: initialisation drew from the RNG
    loader = ResidentLoader(split, cfg.batch_size, accelerator.device, cfg.seed,
                            accelerator.process_index, accelerator.num_processes)

    fixed_z = torch.rand(GRID_NOISE_ROWS, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed)) * 2 - 1
    grids = variant.grid_latents(fixed_z.to(accelerator.device))
    columns = ["d_loss", "g_loss", *variant.stats]
    if main_process:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        artifacts.write_json(run_dir / "config.json", cfg.to_dict() | {"data_source": split.source})
        loss_log = artifacts.LossLog(run_dir / "losses.csv", [*columns, "images_per_s"])
    accelerator.init_trackers("tensorboard", config={k: v for k, v in cfg.to_dict().items() if v is not None})
    log.info("%s/%s on %s (kernels %s): %d training images, %d steps per epoch, run dir %s",
             cfg.gan, cfg.arch, accelerator.device, cfg.kernels, len(split), len(loader), run_dir)

    latest: dict[str, torch.Tensor] = {}
    images_per_step = cfg.batch_size * accelerator.num_processes
    for epoch in range(start_epoch, cfg.epochs):
        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not main_process,
                   dynamic_ncols=True, file=sys.stderr)
        t_last, step_last = time.perf_counter(), step
        for real, y in loader.epoch(epoch):
            latest |= engine.step(real, y, step)
            step += 1
            bar.update()
            if step % cfg.log_every == 0:
                names = [c for c in columns if c in latest]
                values = dict(zip(names, torch.stack([latest[c].float() for c in names]).tolist()))  # host sync
                now = time.perf_counter()
                values["images_per_s"] = (step - step_last) * images_per_step / (now - t_last)
                t_last, step_last = now, step
                if main_process:
                    loss_log.append(step, epoch + 1, values)
                    bar.set_postfix(step=step, D=f"{values['d_loss']:.3f}", G=f"{values.get('g_loss', float('nan')):.3f}",
                                    img_s=f"{values['images_per_s']:,.0f}")
                accelerator.log(values, step=step)
        bar.close()

        if main_process:
            last = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.sample_every == 0 or last:
                for name, (latent, nrow) in grids.items():
                    suffix = f"_{name}" if name else ""
                    grid = artifacts.save_grid(engine.samples(latent), run_dir / "samples" / f"epoch_{epoch + 1:03d}{suffix}.png", nrow)
                    if cfg.log_with == "tensorboard":
                        accelerator.get_tracker("tensorboard", unwrap=True).add_image(f"samples{suffix}", grid, epoch + 1)
            artifacts.plot_losses(loss_log, run_dir / "losses.png", f"{cfg.gan} / {cfg.arch}")
            artifacts.save_checkpoint(run_dir / "checkpoint.pt", {
                "config": cfg.to_dict(), "epoch": epoch + 1, "step": step, "rng": artifacts.rng_state(),
                **engine.state_dict(),
            })
        accelerator.wait_for_everyone()

    if main_process:
        artifacts.save_gif(sorted((run_dir / "samples").glob("epoch_[0-9][0-9][0-9].png")), run_dir / "progress.gif")
        log.info("done: %d epochs, %d steps; samples, losses and checkpoint in %s", cfg.epochs, step, run_dir)
    accelerator.end_training()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="fastgan: %(message)s")
    log.setLevel(logging.INFO)
    try:
        explicit = parse_args(argv)
        cfg, checkpoint = resolve_run(explicit)
        split = load_split(cfg.dataset, "train", cfg.data_dir)
        run_dir = run_directory(cfg, explicit)
        cfg.out = str(run_dir)  # what config.json and the checkpoint record
        if len(split) < cfg.batch_size:
            raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(split)} images)")
        try:
            accelerator = Accelerator(mixed_precision=cfg.mixed_precision, project_dir=run_dir,
                                      log_with="tensorboard" if cfg.log_with == "tensorboard" else None)
        except ValueError as e:  # e.g. a precision this device cannot do
            raise ConfigError(f"--mixed-precision {cfg.mixed_precision}: {e}") from None
    except (ConfigError, DataError, artifacts.CheckpointError) as e:
        print(f"fastgan.train: error: {e}", file=sys.stderr)
        return 2
    kernels.set_backend(cfg.kernels)
    if not accelerator.is_main_process:
        logging.getLogger("fastgan").setLevel(logging.WARNING)
    if checkpoint is not None and checkpoint["epoch"] >= cfg.epochs:
        log.info("%s already holds %d epochs (--epochs %d): nothing to do", cfg.resume, checkpoint["epoch"], cfg.epochs)
        return 0
    train(cfg, split, accelerator, run_dir, checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
