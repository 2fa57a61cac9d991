"""What a run leaves on disk: sample grids, the loss log and plot, the GIF, checkpoints.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over
the target, so a crash never leaves a torn file. Checkpoints, grids and the loss plot are written by
a `BackgroundWriter`, so training does not wait for the disk or for matplotlib.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import queue
import random
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

CHECKPOINT_FORMAT = "fastgan-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message is one line for the user."""


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: os.umask is process-wide, and files are written from a thread


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary file beside `path`, flush it to disk, rename it over `path`, then make the
    rename durable: a crash leaves the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0600 would make the run unreadable to anyone else
            with contextlib.suppress(OSError):  # filesystems without modes (FAT, some network mounts)
                os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the renames in `directory` durable (POSIX; Windows cannot open a folder for this)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


class BackgroundWriter:
    """File writes on one worker thread, in the order submitted. After a write fails, the later ones
    are skipped, so the disk keeps what the last good write left; the caller reads `failure` where it
    chooses (the trainer: at each checkpoint, where all processes agree) and flush() raises it. At
    most `pending` writes wait (each may hold a checkpoint's copy of the weights): past that, submit()
    waits for the disk."""

    def __init__(self, pending: int = 4):
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize=pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fastgan-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if self._error is None:
                    job()
            except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
                self._error = e
            finally:
                self._jobs.task_done()

    def submit(self, job: Callable[[], Any]) -> None:
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait for every submitted write; raise the failure, if one failed."""
        self._jobs.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Finish the pending writes (or skip them after a failure) and stop the thread; raises nothing
        (see `failure`)."""
        self._jobs.put(None)
        self._thread.join()

    @property
    def failure(self) -> BaseException | None:
        """The write that failed, if one did (so far)."""
        return self._error


def snapshot(obj: Any) -> Any:
    """A copy of a (nested dict/list/tuple) payload that training can no longer change: every tensor
    copied to the CPU. What a BackgroundWriter writes while the weights keep moving. A module's
    state dict stays an OrderedDict with its `_metadata` (the versions load_state_dict reads)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        copy = type(obj)((k, snapshot(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            copy._metadata = snapshot(obj._metadata)
        return copy
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(snapshot, obj))
    return obj


# --- pictures -------------------------------------------------------------------------------------
def save_grid(images: Tensor, path: Path, nrow: int) -> Tensor:
    """Save images in [-1, 1] (B, 1, 28, 28) as one PNG grid; returns the grid (3, H, W) in [0, 1]."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images.detach().cpu().float(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    with atomic_write(path) as f:
        save_image(grid, f, format="png")
    return grid


def save_gif(frames: list[Path], path: Path, ms_per_frame: int = 400) -> None:
    from PIL import Image

    if not frames:
        return
    images = [Image.open(p).convert("L") for p in frames]  # "P" would map them to a web palette: 6 greys
    with atomic_write(path) as f:
        images[0].save(f, format="gif", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


# --- the loss log ---------------------------------------------------------------------------------
class LossLog:
    """losses.csv, one row per logged step; appended to across resumes."""

    def __init__(self, path: Path, columns: list[str], resume_step: int = 0):
        """Rows logged after resume_step (written before a crash, then lost with the run's state) are
        dropped, so the history continues exactly where the checkpoint does."""
        self.path, self.columns = Path(path), ["step", "epoch", *columns]
        rows = []
        if self.path.exists() and resume_step > 0:
            with self.path.open() as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header != self.columns:
                    raise CheckpointError(f"{self.path}: columns {header} do not match this run's {self.columns}")
                rows = [r for r in reader if len(r) == len(self.columns) and int(r[0]) <= resume_step]
        with atomic_write(self.path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerows([self.columns, *rows])

    def append(self, step: int, epoch: int, values: dict[str, float]) -> None:
        # Appending a line is the one write that is not atomic: a torn last row is skipped on read.
        with self.path.open("a", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow([step, epoch, *(f"{values[c]:.6g}" if c in values else "" for c in self.columns[2:])])

    def read(self) -> dict[str, list[float]]:
        with self.path.open() as f:
            rows = [r for r in csv.DictReader(f) if None not in r.values()]
        return {c: [float(r[c]) if r[c] else math.nan for r in rows] for c in self.columns}


def plot_losses(data: dict[str, list[float]], path: Path, title: str, evals: dict[str, list[float]] | None = None) -> None:
    """Loss curves; the variant's extra statistics below them; sample quality (FD, score) at the bottom.
    data and evals: what LossLog.read() returns for losses.csv and eval.csv."""
    from matplotlib.figure import Figure  # no pyplot: its global figure registry is not thread-safe

    columns = list(data)[2:]  # after step and epoch
    curves = [c for c in columns if c in ("d_loss", "g_loss")]
    extras = [c for c in columns if c not in curves and c != "images_per_s"]
    panels = 1 + bool(extras) + bool(evals and evals["step"])
    fig = Figure(figsize=(8, 4 + 3 * (panels - 1)))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    for c in curves:
        axes[0].plot(data["step"], data[c], label=c, linewidth=1)
    axes[0].set_ylabel("loss")
    axes[0].set_title(title)
    if extras:
        for c in extras:
            axes[1].plot(data["step"], data[c], label=c, linewidth=1)
    if panels == 1 + bool(extras) + 1:
        ax = axes[-1]
        ax.plot(evals["step"], evals["fd"], "o-", color="tab:red", label="FD-LeNet (lower is better)")
        ax.set_ylabel("FD-LeNet")
        twin = ax.twinx()
        twin.plot(evals["step"], evals["score"], "s-", color="tab:green", label="score (10 is best)")
        twin.set_ylabel("score")
        twin.legend(loc="upper center")
    for ax in axes:
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


# --- checkpoints ----------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's generators (CUDA: the current device's)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


CHECKPOINT, PREVIOUS, INCOMING = "checkpoint.pt", "checkpoint.prev.pt", "checkpoint.pt.new"


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    """Write checkpoint.pt so that a crash at any instant leaves a loadable checkpoint behind: the new
    file is complete on disk before it replaces the old, which is kept as checkpoint.prev.pt. The old
    one becomes checkpoint.prev.pt by a hard link, so checkpoint.pt (the file the trainer tells users
    to resume from) exists at every instant; without hard links, by a rename."""
    run_dir = Path(run_dir)
    with atomic_write(run_dir / INCOMING) as f:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, f)
    if (run_dir / CHECKPOINT).exists():
        staged = run_dir / f"{PREVIOUS}.new"
        try:
            staged.unlink(missing_ok=True)
            os.link(run_dir / CHECKPOINT, staged)
            os.replace(staged, run_dir / PREVIOUS)
        except OSError:  # a filesystem without hard links
            os.replace(run_dir / CHECKPOINT, run_dir / PREVIOUS)
    os.replace(run_dir / INCOMING, run_dir / CHECKPOINT)
    fsync_dir(run_dir)  # the renames themselves durable


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a torn or foreign file
        raise CheckpointError(f"--resume {path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"--resume {path}: not a fastgan checkpoint")
    return payload


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The loadable checkpoint with the most steps in run_dir (None if there is none at all); a torn
    newest file falls back to the one before it."""
    found, errors = [], []
    for name in (CHECKPOINT, INCOMING, PREVIOUS):
        path = Path(run_dir) / name
        if path.is_file():
            try:
                found.append((path, load_checkpoint(path)))
            except CheckpointError as e:
                errors.append(str(e))
    if found:
        return max(found, key=lambda item: item[1]["step"])
    if errors:
        raise CheckpointError(f"{run_dir}: no readable checkpoint ({'; '.join(errors)})")
    return None


def checkpoint_at(target: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or the newest readable checkpoint of a run directory."""
    target = Path(target)
    if not target.is_dir():
        return target, load_checkpoint(target)
    found = newest_checkpoint(target)
    if found is None:
        raise CheckpointError(f"{target}: no checkpoint in this folder")
    return found
