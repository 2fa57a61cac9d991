"""Every setting of a run in one typed object, its per-variant defaults, validation, and the CLI.

Resolution order: the dataclass defaults below, then the variant's `defaults`, then flags given on
the command line (then, on --resume, the checkpoint's config under the flags given).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

from fastgan.data import DATASETS
from kernels import BACKENDS
from fastgan.models import ARCHS
from fastgan.variants import VARIANTS


class ConfigError(ValueError):
    """A setting the run cannot start with; the message is one line for the user."""


def _opt(default: Any, help: str, knob: bool = False, choices: Sequence[str] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "knob": knob, "choices": choices})


@dataclass
class Config:
    # what to train
    gan: str = _opt("gan", "GAN variant", choices=tuple(VARIANTS))
    arch: str = _opt("mlp", "network architecture", choices=ARCHS)
    dataset: str = _opt("mnist", "dataset", choices=tuple(DATASETS))
    data_dir: str | None = _opt(None, "folder with the IDX files (torchvision's layout or plain); default: ./data, "
                                "else download, else (mnist) the bundled 10,000-digit sample")
    # optimisation
    epochs: int = _opt(25, "passes over the training split")
    batch_size: int = _opt(64, "images per step, per process")
    z_dim: int = _opt(96, "noise dimension, z ~ U[-1, 1]")
    optimizer: str = _opt("adam", "optimizer of both networks", choices=("adam", "rmsprop"))
    lr_g: float = _opt(2e-4, "generator learning rate")
    lr_d: float = _opt(2e-4, "discriminator learning rate")
    beta1: float = _opt(0.5, "Adam beta1")
    beta2: float = _opt(0.999, "Adam beta2")
    n_critic: int = _opt(1, "discriminator steps per generator step")
    mode: str = _opt("auto", "how an iteration runs: eager, torch.compile'd losses, or one CUDA graph per iteration; "
                     "auto = graph on CUDA, eager elsewhere", choices=("auto", "eager", "compile", "graph"))
    mixed_precision: str = _opt("no", "autocast precision (Accelerate)", choices=("no", "bf16", "fp16"))
    kernels: str = _opt("auto", "fused ops and the analytic MLP gradient penalty (triton), or plain PyTorch with "
                        "double backward (torch); auto = triton on CUDA, torch elsewhere", choices=BACKENDS)
    seed: int = _opt(0, "random seed; same seed, same run on the CPU")
    ema_decay: float = _opt(0.0, "decay of an exponential moving average of G's weights used for grids and "
                            "evaluation, e.g. 0.999 (0: off)")
    eval_every: int = _opt(0, "epochs between sample-quality evaluations during training (0: off)")
    # output
    out: str | None = _opt(None, "run directory (default runs/<gan>-<arch>-<time>)")
    resume: str | None = _opt(None, "checkpoint to continue from, or 'auto': the newest good checkpoint in --out "
                              "if there is one, else a new run there")
    checkpoint_every: int = _opt(0, "steps between checkpoints within an epoch (0: at epoch ends only)")
    log_every: int = _opt(50, "steps between loss readings (each is one host sync)")
    sample_every: int = _opt(1, "epochs between sample grids")
    log_with: str = _opt("none", "experiment tracker (Accelerate)", choices=("none", "tensorboard"))
    # the variants' own knobs: None unless the chosen variant uses them
    clip: float | None = _opt(None, "critic weight clipping bound", knob=True)
    gp_weight: float | None = _opt(None, "gradient-penalty weight λ", knob=True)
    perturb_scale: float | None = _opt(None, "DRAGAN perturbation, in units of the data's std", knob=True)
    margin: float | None = _opt(None, "EBGAN energy margin m", knob=True)
    pt_weight: float | None = _opt(None, "EBGAN pull-away term weight", knob=True)
    gamma: float | None = _opt(None, "BEGAN diversity ratio γ", knob=True)
    lambda_k: float | None = _opt(None, "BEGAN k learning rate λ_k", knob=True)
    k0: float | None = _opt(None, "BEGAN initial k", knob=True)
    n_cont: int | None = _opt(None, "infoGAN continuous codes (beside 10 categories)", knob=True)
    info_cat_weight: float | None = _opt(None, "infoGAN categorical-code loss weight", knob=True)
    info_cont_weight: float | None = _opt(None, "infoGAN continuous-code loss weight", knob=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Config)}
KNOBS = tuple(name for name, f in FIELDS.items() if f.metadata["knob"])
# Settings that define the networks or what they learn: a checkpoint only resumes under the same ones.
MODEL_KEYS = ("gan", "arch", "dataset", "z_dim", "n_cont", "optimizer")  # optimizer: its state is checkpointed

for _v in VARIANTS.values():  # a typo in a variant's defaults fails at import, not mid-run
    assert set(_v.defaults) <= FIELDS.keys(), f"{_v.name}: unknown defaults {set(_v.defaults) - FIELDS.keys()}"


def _field_type(name: str) -> type:
    annotation = FIELDS[name].type
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def resolve(explicit: dict[str, Any], base: dict[str, Any] | None = None) -> Config:
    """Build and validate a Config from the explicitly given settings, over `base` (a checkpoint's
    config) or over the variant's defaults."""
    unknown = (explicit.keys() | (base or {}).keys()) - FIELDS.keys()
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    gan = explicit.get("gan", (base or {}).get("gan", "gan"))
    if gan not in VARIANTS:
        raise ConfigError(f"unknown --gan {gan!r}; choose from {', '.join(VARIANTS)}")
    variant = VARIANTS[gan]
    for name in explicit.keys() & set(KNOBS):
        if explicit[name] is not None and name not in variant.defaults:
            users = [v.name for v in VARIANTS.values() if name in v.defaults]
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to --gan {gan} (used by: {', '.join(users)})")
    if base is None:
        values = {name: f.default for name, f in FIELDS.items()} | variant.defaults
    else:
        values = dict(base)
    values |= explicit
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    for name, f in FIELDS.items():
        value, choices = getattr(cfg, name), f.metadata["choices"]
        if choices and value not in choices:
            raise ConfigError(f"unknown --{name.replace('_', '-')} {value!r}; choose from {', '.join(choices)}")
    positive_ints = ("epochs", "batch_size", "z_dim", "n_critic", "log_every", "sample_every", "n_cont")
    for name in positive_ints:
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if cfg.batch_size == 1 and (cfg.arch == "conv" or cfg.gan == "ebgan"):
        why = "the conv networks' BatchNorm" if cfg.arch == "conv" else "ebgan's pull-away term"
        raise ConfigError(f"--batch-size 1: {why} needs at least 2 samples per batch (per process)")
    if not (isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**31):
        raise ConfigError(f"--seed must be an integer in [0, 2**31), got {cfg.seed}")
    if not (isinstance(cfg.eval_every, int) and cfg.eval_every >= 0):
        raise ConfigError(f"--eval-every must be an integer >= 0, got {cfg.eval_every}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    if not isinstance(cfg.checkpoint_every, int) or cfg.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be an integer >= 0, got {cfg.checkpoint_every}")
    for name in ("lr_g", "lr_d", "clip", "perturb_scale", "margin", "gamma"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    for name in ("gp_weight", "pt_weight", "lambda_k", "info_cat_weight", "info_cont_weight"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    for name in ("beta1", "beta2"):
        value = getattr(cfg, name)
        if not 0 <= value < 1:
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    if cfg.gamma is not None and cfg.gamma > 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {cfg.gamma}")
    if cfg.k0 is not None and not 0 <= cfg.k0 <= 1:
        raise ConfigError(f"--k0 must be in [0, 1], got {cfg.k0}")
    if cfg.log_with == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("--log-with tensorboard needs the tensorboard package: pip install 'fastgan[tensorboard]'")


# --- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _default_help(name: str) -> str:
    """'(default: X)', with the variants that override X, so --help tells the whole story."""
    f = FIELDS[name]
    overrides = [f"{v.name} {v.defaults[name]:g}" if isinstance(v.defaults[name], float) else f"{v.name} {v.defaults[name]}"
                 for v in VARIANTS.values() if name in v.defaults]
    if f.metadata["knob"]:
        return f"(default: {', '.join(overrides)})"
    base = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    choices = f"one of {', '.join(f.metadata['choices'])}; " if f.metadata["choices"] else ""
    return f"({choices}default: {base}{'; ' + ', '.join(overrides) if overrides else ''})"


def build_parser(prog: str = "fastgan.train") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Train a GAN variant on MNIST. Settings not given take the "
                     "variant's defaults, or, with --resume, the checkpoint's.")
    for name, f in FIELDS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_field_type(name), default=None,
                            metavar=name.upper(), help=f"{f.metadata['help']} {_default_help(name)}")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The settings given explicitly on the command line (argparse exits 2 on malformed flags)."""
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return {k: v for k, v in vars(ns).items() if v is not None}
