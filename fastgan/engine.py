"""One training iteration: the variant's D step, and on every n_critic-th iteration its G step.

The step functions return detached device tensors; nothing here reads a value back to the host.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from fastgan.artifacts import CheckpointError
from fastgan.config import Config
from fastgan.models import build_models
from fastgan.variants import VARIANTS
from fastgan.variants.base import Critic, Stats, Variant


class Engine:
    def __init__(self, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 variant: Variant, accelerator: Accelerator, z_dim: int, n_critic: int,
                 G_ema: nn.Module | None = None, ema_decay: float = 0.0):
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.variant, self.accelerator = variant, accelerator
        self.z_dim, self.n_critic = z_dim, n_critic
        self.G_ema, self.ema_decay = G_ema, ema_decay

    def noise(self, n: int) -> Tensor:
        return torch.rand(n, self.z_dim, device=self.accelerator.device) * 2 - 1  # U[-1, 1]

    def d_step(self, real: Tensor, y: Tensor) -> Stats:
        latent, codes = self.variant.latent(self.noise(len(real)), y)
        with torch.no_grad():
            fake = self.G(latent)
        loss, stats = self.variant.d_loss(Critic(self.D, y), real, fake, codes)
        self.opt_d.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.opt_d.step()
        if self.variant.state and self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="mean")  # state (BEGAN's k) must agree across ranks
        self.variant.after_d_step(self.D, stats)
        return {"d_loss": loss.detach(), **stats}

    def g_step(self, y: Tensor) -> Stats:
        latent, codes = self.variant.latent(self.noise(len(y)), y)
        loss, stats = self.variant.g_loss(Critic(self.D, y), self.G(latent), codes)
        self.opt_g.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.opt_g.step()
        if self.G_ema is not None:
            self.update_ema()
        return {"g_loss": loss.detach(), **stats}

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema ← decay·G_ema + (1 − decay)·G, one fused call; buffers (BatchNorm statistics) copied."""
        G = self.accelerator.unwrap_model(self.G)
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(G.parameters()), 1 - self.ema_decay)
        for ema_buffer, buffer in zip(self.G_ema.buffers(), G.buffers()):
            ema_buffer.copy_(buffer)

    def step(self, real: Tensor, y: Tensor, iteration: int) -> Stats:
        """iteration counts from 0 over the whole run, so n_critic spans epoch boundaries."""
        stats = self.d_step(real, y)
        if (iteration + 1) % self.n_critic == 0:
            stats |= self.g_step(y)
        return stats

    def finite(self) -> Tensor:
        """A device bool: every parameter of G and D is finite (no host sync until read)."""
        params = [p.detach() for net in (self.G, self.D) for p in net.parameters()]
        return torch.stack([torch.isfinite(p).all() for p in params]).all()

    def state_dict(self) -> dict[str, Any]:
        """Networks (unwrapped: no DDP or compile prefixes), optimizers and variant state."""
        unwrap = self.accelerator.unwrap_model
        state = {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "variant": self.variant.state_dict()}
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    @torch.no_grad()
    def samples(self, latent: Tensor) -> Tensor:
        """Images for a latent from G (its moving average if kept), in eval mode (BatchNorm running
        statistics)."""
        G = self.G_ema if self.G_ema is not None else self.G
        G.eval()
        try:
            return G(latent).float()
        finally:
            if G is self.G:
                G.train()


def build_engine(cfg: Config, accelerator: Accelerator, state: dict[str, Any] | None = None) -> Engine:
    """The variant, its networks and Adam optimizers, restored from `state` (a checkpoint) if given,
    placed and wrapped by Accelerate."""
    variant = VARIANTS[cfg.gan](cfg)
    G, D = build_models(cfg.arch, variant, cfg.z_dim)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    if state is not None:
        try:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            variant.load_state_dict(state["variant"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"the checkpoint does not fit these networks ({first}); was it written by "
                                  "another fastgan version?") from None
    G_ema = None
    if cfg.ema_decay > 0:
        G_ema = copy.deepcopy(G).requires_grad_(False).eval()
        if state is not None and "G_ema" in state:
            G_ema.load_state_dict(state["G_ema"])
        G_ema.to(accelerator.device)
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    variant.to(accelerator.device)
    return Engine(G, D, opt_g, opt_d, variant, accelerator, cfg.z_dim, cfg.n_critic, G_ema, cfg.ema_decay)
