"""Train one GAN variant on MNIST.

    python -m fastgan.train --gan wgan_gp
    accelerate launch -m fastgan.train --gan wgan_gp        (accelerate launch --cpu ... on a CPU)

Reads top to bottom: settings -> data -> networks -> (resume) -> the loop -> what the run leaves.
Exit status: 0 done (or stopped cleanly by SIGTERM/SIGINT), 1 a write failed (disk full), 2 bad input,
3 training diverged.
"""
from __future__ import annotations

import errno
import functools
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env, set_seed
from tqdm.auto import tqdm

import kernels
from fastgan import artifacts
from fastgan.config import MODEL_KEYS, Config, ConfigError, parse_args, resolve
from fastgan.data import DataError, ResidentLoader, Split, data_source, read_split
from fastgan.engine import build_engine
from fastgan.evaluate import Evaluator, Metrics
from fastgan.models import noise

log = logging.getLogger("fastgan")
T = TypeVar("T")
GRID_NOISE_ROWS = 100  # the fixed noise behind every epoch's grid (a 10x10 grid)
# losses.png is drawn after the first epoch, then at most this often, and after every evaluation, at a
# stop and at the end: a drawing takes 0.1-0.4 s of CPU (on the writer's thread, but holding the GIL
# the training loop needs), and the seed's 50 epochs take ~0.23 s each on an H200.
PLOT_SECONDS = 30.0


class Diverged(RuntimeError):
    """Non-finite losses or weights; the message names the step and the values."""


# --- settings, checked before any work -----------------------------------------------------------
def resolve_run(explicit: dict[str, Any]) -> tuple[Config, dict[str, Any] | None]:
    """The run's config, and the checkpoint to resume from (refused if it trained other networks)."""
    resume = explicit.get("resume")
    if resume == "auto":
        if "out" not in explicit:
            raise ConfigError("--resume auto needs --out DIR: the run directory to continue, or to start")
        found = artifacts.newest_checkpoint(Path(explicit["out"])) if Path(explicit["out"]).is_dir() else None
        if found is None:  # nothing to resume yet: a new run in --out
            return resolve({k: v for k, v in explicit.items() if k != "resume"}), None
        resume, checkpoint = str(found[0]), found[1]
    elif resume is not None:
        checkpoint = artifacts.load_checkpoint(resume)
    else:
        return resolve(explicit), None
    saved = Config().to_dict() | checkpoint["config"]  # a setting added since the checkpoint: its default then
    for key in MODEL_KEYS:
        if key in explicit and explicit[key] != saved[key]:
            raise ConfigError(f"--resume {resume} trained --{key.replace('_', '-')} {saved[key]}, "
                              f"not {explicit[key]}; start a new run instead")
    return resolve(explicit | {"resume": resume}, base=saved), checkpoint


def run_directory(cfg: Config, explicit: dict[str, Any], resuming: bool) -> Path:
    """--out if given; else, resuming, the checkpoint's folder; else a new runs/<gan>-<arch>-<time>."""
    if "out" in explicit:
        run_dir = Path(explicit["out"])
    elif resuming:
        return Path(cfg.resume).parent
    else:
        run_dir = Path("runs") / f"{cfg.gan}-{cfg.arch}-{datetime.now():%Y%m%d-%H%M%S}"
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {run_dir}: cannot create a folder there ({existing} is not a writable folder)")
    if not resuming and explicit.get("resume") != "auto" and run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"--out {run_dir} already holds a run; pass --resume auto (or a checkpoint) or another --out")
    return run_dir


class StopRequest:
    """SIGTERM / SIGINT ask the loop to finish its step, checkpoint and exit 0; a second SIGINT
    interrupts at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def main_first(state: PartialState, fn: Callable[[], T], share: bool = False) -> T:
    """fn() on the main process first (it may download or create), then on the others, or with
    share=True main's result for all. An input error on any process is raised on every process, so
    none waits alone at a collective."""
    if state.num_processes == 1:
        return fn()
    input_errors = (ConfigError, DataError, artifacts.CheckpointError)
    outcome: Any = None
    if state.is_main_process:
        try:
            outcome = fn()
        except input_errors as e:
            outcome = e
    (shared,) = broadcast_object_list([outcome if share or isinstance(outcome, Exception) else None])
    if isinstance(shared, Exception):
        raise shared
    if share:
        return shared
    error = None
    if not state.is_main_process:  # e.g. another node without the files the main process found
        try:
            outcome = fn()
        except input_errors as e:
            error = e
    errors = [e for e in gather_object([error]) if e is not None]
    if errors:
        raise errors[0]
    return outcome


def restore_rng(checkpoint: dict[str, Any], seed: int, rank: int) -> None:
    """Each rank takes back its own generators; a rank the checkpoint did not have (more processes
    than before) starts from a seed derived from (seed, step, rank)."""
    states = checkpoint["rng"]
    if rank < len(states):
        artifacts.set_rng_state(states[rank])
    else:
        set_seed((seed + 1_000_003 * checkpoint["step"] + rank) % 2**31)  # numpy takes seeds below 2**32


# --- the run --------------------------------------------------------------------------------------
def train(cfg: Config, split: Split, test_split: Split | None, accelerator: Accelerator, run_dir: Path,
          checkpoint: dict[str, Any] | None, stop: StopRequest, writer: artifacts.BackgroundWriter) -> None:
    """The run; checkpoints, grids and the loss plot go to disk through `writer`; a failed write ends the
    run at the next checkpoint (on every process), at a stop, or at the end. test_split: what --eval-every
    scores against (on the main process)."""
    main_process = accelerator.is_main_process
    set_seed(cfg.seed, device_specific=True)  # noise differs across ranks; DDP syncs the initial weights

    engine = build_engine(cfg, accelerator, checkpoint)
    variant = engine.variant
    loader = ResidentLoader(split, cfg.batch_size, accelerator.device, cfg.seed,
                            accelerator.process_index, accelerator.num_processes)
    epoch0, batch0, step = 0, 0, 0
    if checkpoint is not None:  # the epoch's consumed samples are a prefix of its order, whatever the batch
        epoch0, batch0, step = checkpoint["epoch"], checkpoint["samples"] // loader.global_batch, checkpoint["step"]
        restore_rng(checkpoint, cfg.seed, accelerator.process_index)  # after building: init drew from the RNG

    fixed_z = noise(GRID_NOISE_ROWS, cfg.z_dim, accelerator.device, torch.Generator().manual_seed(cfg.seed))
    grids = variant.grid_latents(fixed_z)
    columns = ["d_loss", "g_loss", *variant.stats]
    if main_process:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        artifacts.write_json(run_dir / "config.json", cfg.to_dict() | {"data_source": split.source})
        loss_log = artifacts.LossLog(run_dir / "losses.csv", [*columns, "images_per_s"], resume_step=step)
    evaluator = eval_log = None
    if cfg.eval_every and main_process:
        evaluator = Evaluator(split, test_split, accelerator.device)
        eval_log = artifacts.LossLog(run_dir / "eval.csv", list(Metrics.__dataclass_fields__), resume_step=step)
    accelerator.init_trackers("tensorboard", config={k: v for k, v in cfg.to_dict().items() if v is not None})
    log.info("%s/%s on %s (%s mode, kernels %s): %d training images, %d steps per epoch, run dir %s%s",
             cfg.gan, cfg.arch, accelerator.device, engine.mode, cfg.kernels, len(split), len(loader), run_dir,
             f", resuming at step {step}" if checkpoint else "")

    def save(epochs_done: int, batches_done: int) -> None:
        """Checkpoint the position (epochs_done, global batches done in the next) = step; never a
        diverged state. Called by every process at the same step (it gathers their RNG states); all
        of them learn here whether the main process's writes failed, so none waits for a dead peer."""
        health = torch.stack([engine.finite().float(),
                              torch.tensor(float(writer.failure is not None), device=accelerator.device)])
        finite, write_failed = accelerator.reduce(health, reduction="mean").tolist()  # host sync, per checkpoint
        if write_failed > 0:
            writer.flush()  # the main process: raises the failure
            raise OSError(errno.EIO, "the main process could not write the run's files")
        if finite < 1:
            raise Diverged(f"non-finite weights at step {step}")
        rng = gather_object([artifacts.rng_state()])
        if main_process:
            payload = artifacts.snapshot({  # a copy: training moves on while it is written
                "config": cfg.to_dict(), "epoch": epochs_done, "batch": batches_done, "step": step,
                "samples": batches_done * loader.global_batch, "world_size": accelerator.num_processes,
                "rng": rng, **engine.state_dict(),
            })
            writer.submit(lambda: artifacts.save_checkpoint(run_dir, payload))

    drawn_at = -math.inf  # when losses.png was last drawn

    def draw_losses() -> None:
        """losses.png, from the logs as they are now, drawn on the writer's thread (the first drawing,
        with matplotlib's import, took 0.8 s on the 2-core CPU machine)."""
        nonlocal drawn_at
        losses, evals = loss_log.read(), eval_log.read() if eval_log is not None else None
        writer.submit(lambda: artifacts.plot_losses(losses, run_dir / "losses.png", f"{cfg.gan} / {cfg.arch}", evals))
        drawn_at = time.perf_counter()

    def write_grid(images: torch.Tensor, nrow: int, tag: str, path: Path, epoch: int) -> None:
        grid = artifacts.save_grid(images, path, nrow)
        if cfg.log_with == "tensorboard":
            accelerator.get_tracker("tensorboard", unwrap=True).add_image(tag, grid, epoch)

    latest: dict[str, torch.Tensor] = {}
    images_per_step = cfg.batch_size * accelerator.num_processes
    for epoch in range(epoch0, cfg.epochs):
        first = batch0 if epoch == epoch0 else 0
        with tqdm(total=len(loader), initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                  disable=not main_process, dynamic_ncols=True, file=sys.stderr) as bar:
            t_last, step_last = time.perf_counter(), step
            loader.start_epoch(epoch, first)
            for batch in range(first, len(loader)):
                latest |= engine.iteration(loader, step)
                step += 1
                bar.update()
                stopping = stop.signal is not None and accelerator.num_processes == 1
                if step % cfg.log_every == 0:
                    # One reading per log interval: the losses, whether all weights are finite and
                    # whether a stop was asked for, averaged over the processes (so all agree) and
                    # brought to the host together.
                    names = [c for c in columns if c in latest]
                    flags = [engine.finite().float(), torch.tensor(float(stop.signal is not None), device=accelerator.device)]
                    reading = accelerator.reduce(torch.stack([latest[c].float() for c in names] + flags), reduction="mean")
                    *losses, finite, stop_asked = reading.tolist()  # host sync
                    values = dict(zip(names, losses))
                    stopping = stop_asked > 0
                    if finite < 1 or not all(map(math.isfinite, losses)):
                        raise Diverged(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                                       + ("" if finite else ", non-finite weights"))
                    now = time.perf_counter()
                    values["images_per_s"] = (step - step_last) * images_per_step / (now - t_last)
                    t_last, step_last = now, step
                    if main_process:
                        loss_log.append(step, epoch + 1, values)
                        bar.set_postfix(step=step, D=f"{values['d_loss']:.3f}", G=f"{values.get('g_loss', float('nan')):.3f}",
                                        img_s=f"{values['images_per_s']:,.0f}")
                    accelerator.log(values, step=step)
                if stopping:
                    save(epoch, batch + 1)
                    if main_process:
                        draw_losses()
                    writer.flush()
                    bar.close()
                    log.info("stopped by %s after step %d: checkpoint written; continue with --resume %s",
                             signal.Signals(stop.signal).name if stop.signal else "a signal to another process",
                             step, run_dir / artifacts.CHECKPOINT)
                    accelerator.end_training()
                    return
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and batch + 1 < len(loader):
                    save(epoch, batch + 1)

        if main_process:
            last = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.sample_every == 0 or last:
                for name, (latent, nrow) in grids.items():
                    suffix = f"_{name}" if name else ""
                    writer.submit(functools.partial(write_grid, engine.samples(latent).cpu(), nrow, f"samples{suffix}",
                                                    run_dir / "samples" / f"epoch_{epoch + 1:03d}{suffix}.png", epoch + 1))
            evaluating = evaluator is not None and ((epoch + 1) % cfg.eval_every == 0 or last)
            if evaluating:
                result = evaluator(engine)
                eval_log.append(step, epoch + 1, {k: v for k, v in asdict(result).items() if v is not None})
                artifacts.write_json(run_dir / "metrics.json", {
                    "step": step, "epoch": epoch + 1, "samples": evaluator.n, "data": split.source,
                    "generated": asdict(result), "real_vs_real": asdict(evaluator.floor)})
                log.info("epoch %d: FD-LeNet %.2f (real %.2f), score %.2f (real %.2f), coverage %d/10",
                         epoch + 1, result.fd, evaluator.floor.fd, result.score, evaluator.floor.score, result.coverage)
            if last or evaluating or time.perf_counter() - drawn_at >= PLOT_SECONDS:
                draw_losses()
        save(epoch + 1, 0)
        accelerator.wait_for_everyone()

    writer.flush()
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
        launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by an `accelerate launch` config
        if "mixed_precision" not in explicit and launcher_precision:
            cfg = resolve({"mixed_precision": launcher_precision}, base=cfg.to_dict())
        # Accelerate reads ACCELERATE_USE_CPU (set by `accelerate launch --cpu`); without CUDA the
        # CPU is the only choice, and several processes must then join through gloo, not run alone.
        use_cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
        state = PartialState(cpu=use_cpu)  # joins the other processes, if launched with several
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if state.num_processes != launched:
            raise ConfigError(f"{launched} processes were launched but they did not join one job "
                              f"(Accelerate sees {state.num_processes}); see launch/README.md")
        if not state.is_main_process:
            log.setLevel(logging.WARNING)
        run_dir = main_first(state, lambda: run_directory(cfg, explicit, resuming=checkpoint is not None), share=True)
        cfg.out = str(run_dir)  # what config.json and the checkpoint record
        # One choice of data for every process, made (and downloaded) by the main process
        source = main_first(state, lambda: data_source(cfg.dataset, cfg.data_dir), share=True)
        split = main_first(state, lambda: read_split(source, "train"))
        if len(split) < cfg.batch_size * state.num_processes:
            per = f" x {state.num_processes} processes" if state.num_processes > 1 else ""
            raise ConfigError(f"--batch-size {cfg.batch_size}{per} is larger than the dataset ({len(split)} images)")
        # the held-out split --eval-every scores against, checked now rather than after the first epochs
        test_split = main_first(state, lambda: read_split(source, "test") if cfg.eval_every and state.is_main_process
                                else None)
        try:
            accelerator = Accelerator(cpu=use_cpu, mixed_precision=cfg.mixed_precision, project_dir=run_dir,
                                      log_with="tensorboard" if cfg.log_with == "tensorboard" else None)
        except ValueError as e:  # e.g. a precision this device cannot do
            raise ConfigError(f"--mixed-precision {cfg.mixed_precision}: {e}") from None
    except (ConfigError, DataError, artifacts.CheckpointError) as e:
        print(f"fastgan.train: error: {e}", file=sys.stderr)
        return 2
    kernels.set_backend(cfg.kernels)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # fp32 weights, TF32 products
    if checkpoint is not None and checkpoint["epoch"] >= cfg.epochs:
        log.info("%s already holds %d epochs (--epochs %d): nothing to do", cfg.resume, checkpoint["epoch"], cfg.epochs)
        return 0
    stop, writer = StopRequest(), artifacts.BackgroundWriter()
    try:
        try:
            train(cfg, split, test_split, accelerator, run_dir, checkpoint, stop, writer)
        finally:
            stop.restore()  # a Ctrl-C from here on interrupts at once
            writer.close()  # the writes still queued are finished first: a diverged run keeps its last good checkpoint
    except artifacts.CheckpointError as e:
        print(f"fastgan.train: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"fastgan.train: error: training diverged, {e}; the last good checkpoint in {run_dir} is untouched "
              "(try a lower learning rate)", file=sys.stderr)
        return 3 if writer.failure is None else write_failed(writer.failure, run_dir)
    except OSError as e:  # a full disk, a vanished folder: the previous checkpoint is intact
        return write_failed(e, run_dir)
    return 0


def write_failed(error: BaseException, run_dir: Path) -> int:
    if isinstance(error, OSError):
        what = f"{error.strerror or error} while writing {error.filename or run_dir}"
    else:
        what = f"writing to {run_dir} failed ({type(error).__name__}: {error})"
    print(f"fastgan.train: error: {what}; the last complete checkpoint in {run_dir} is intact", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
