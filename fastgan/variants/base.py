"""The interface every variant implements, and the losses several of them share."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastgan.models.heads import N_CLASSES, DOutput, Head, one_hot
from fastgan.penalties import critic_penalty

if TYPE_CHECKING:
    from fastgan.config import Config

class Critic:
    """D with the batch's labels bound: call it for a DOutput, ask it for the real and the fake
    batch's outputs together, or for the gradient penalty of its score (analytic or autograd, see
    fastgan.penalties.critic_penalty)."""

    def __init__(self, net: nn.Module, y: Tensor | None = None):
        self.net, self.y = net, y

    def __call__(self, x: Tensor) -> DOutput:
        return self.net(x, self.y)

    def pair(self, real: Tensor, fake: Tensor) -> tuple[DOutput, DOutput]:
        """(D(real), D(fake)). A network that treats samples independently sees both batches in one
        call (half the launches, twice the rows per GEMM); BatchNorm couples a batch's samples, so
        such a network sees each batch on its own, as the seed's code does."""
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.net.modules()):
            return self(real), self(fake)
        y = None if self.y is None else torch.cat([self.y, self.y])
        both = self.net(torch.cat([real, fake]), y)
        sizes = [len(real), len(fake)]
        halves = [t.split(sizes) if t is not None else (None, None) for t in both]
        return DOutput(*(h[0] for h in halves)), DOutput(*(h[1] for h in halves))

    def gradient_penalty(self, points: Tensor) -> Tensor:
        return critic_penalty(self.net, points, self.y)


Codes = dict[str, Tensor]  # what G was given beside the noise: labels "y", infogan's codes
Stats = dict[str, Tensor]  # detached device scalars for the log


class Variant:
    """A GAN variant: what D must output, what G and D are conditioned on, its default
    hyperparameters, its two losses, and optional hooks. Shared logic lives in the engine."""

    name: ClassVar[str]
    head: ClassVar[Head] = "critic"
    conditional: ClassVar[bool] = False  # G is given a class label (cgan, acgan)
    d_sees_label: ClassVar[bool] = False  # D is given the class label as an input (cgan)
    gradient_penalty: ClassVar[bool] = False  # the critic carries a per-sample penalty: no BatchNorm
    defaults: ClassVar[dict[str, Any]] = {}  # overrides of Config's defaults, and this variant's knobs
    stats: ClassVar[tuple[str, ...]] = ()  # extra logged values, beside d_loss and g_loss

    def __init__(self, cfg: "Config"):
        self.cfg = cfg
        self.state: dict[str, Tensor] = {}  # per-run state that a checkpoint must carry (BEGAN's k)

    # --- what G is given ------------------------------------------------------------------------
    def code_dim(self) -> int:
        """Width of what is concatenated to the noise z at G's input."""
        return N_CLASSES if self.conditional else 0

    def q_dims(self) -> tuple[int, int]:
        """(categorical, continuous) code sizes for a Q head."""
        return (0, 0)

    def latent(self, z: Tensor, y: Tensor) -> tuple[Tensor, Codes]:
        """G's input for noise z (B, z_dim) and the batch's labels y (B,)."""
        if self.conditional:
            return torch.cat([z, one_hot(y, z.dtype)], dim=1), {"y": y}
        return z, {}

    def grid_latents(self, z: Tensor) -> dict[str, tuple[Tensor, int]]:
        """Latents for the sample grids from 100 fixed noise vectors z (100, z_dim): name -> (latent,
        nrow). Conditional variants: one column per class, one row per noise vector."""
        if self.conditional:
            rows = z[:N_CLASSES].repeat_interleave(N_CLASSES, dim=0)  # (100, z_dim): row r repeats z[r]
            labels = torch.arange(N_CLASSES, device=z.device).repeat(N_CLASSES)  # column c is class c
            return {"": (self.latent(rows, labels)[0], N_CLASSES)}
        return {"": (z, N_CLASSES)}

    def interpolation_latents(self, z_from: Tensor, z_to: Tensor, steps: int) -> dict[str, tuple[Tensor, int]]:
        """Rows walking from z_from[r] to z_to[r] in `steps` columns; conditional variants keep the
        label fixed along a row (row r: class r mod 10)."""
        t = torch.linspace(0, 1, steps, device=z_from.device, dtype=z_from.dtype)[None, :, None]
        z = torch.lerp(z_from[:, None], z_to[:, None], t).flatten(0, 1)  # (rows * steps, z_dim)
        labels = (torch.arange(len(z_from), device=z.device) % N_CLASSES).repeat_interleave(steps)
        return {"": (self.latent(z, labels)[0], steps)}

    # --- losses ---------------------------------------------------------------------------------
    def d_loss(self, D: Critic, real: Tensor, fake: Tensor, codes: Codes) -> tuple[Tensor, Stats]:
        raise NotImplementedError

    def g_loss(self, D: Critic, fake: Tensor, codes: Codes) -> tuple[Tensor, Stats]:
        raise NotImplementedError

    # --- hooks ----------------------------------------------------------------------------------
    def after_d_step(self, D: nn.Module, stats: Stats) -> None:
        """Called after every D optimizer step (WGAN's clipping, BEGAN's k control)."""

    # --- state ----------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "Variant":
        self.state = {k: v.to(device) for k, v in self.state.items()}
        return self

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state.keys() != self.state.keys():
            raise ValueError(f"variant state has keys {sorted(state)}, expected {sorted(self.state)}")
        for k, v in state.items():
            self.state[k].copy_(v)


# --- losses shared by several variants ------------------------------------------------------------
def bce(logits: Tensor, target: float) -> Tensor:
    """Binary cross-entropy against a constant label 1 or 0, the sigmoid folded in:
    −log σ(s) = softplus(−s) and −log(1 − σ(s)) = softplus(s). Stable for any logit, and three
    kernels each way where binary_cross_entropy_with_logits and its target tensor take about a dozen."""
    if target not in (0.0, 1.0):
        raise ValueError(f"bce takes a label of 0 or 1, not {target}")
    return F.softplus(-logits if target == 1.0 else logits).mean()


def gan_d_loss(score_real: Tensor, score_fake: Tensor) -> Tensor:
    return bce(score_real, 1.0) + bce(score_fake, 0.0)


def gan_g_loss(score_fake: Tensor) -> Tensor:
    """Non-saturating: maximise log D(G(z)) rather than minimise log(1 − D(G(z)))."""
    return bce(score_fake, 1.0)
