"""One training iteration, and the three ways to run it.

An iteration is: a batch from the resident loader, the variant's D step, and on every n_critic-th
iteration its G step (and the EMA of G). Nothing here reads a value back to the host: the step
functions return detached device tensors, read by the training loop every --log-every steps.

Modes (`--mode`):
- eager:   the step functions as written.
- compile: G's samples (noise, G) and the D and G losses (D, the variant's loss, the analytic
           penalty) through torch.compile; their backward runs as compiled autograd graphs.
- graph:   the whole iteration — batch indices from the loader's device cursor, noise, D step, G
           step, both Adam steps, EMA — captured once in a CUDA graph and replayed. n_critic > 1
           captures a D-only iteration beside the D+G one.
A mode that cannot run a given setting falls back (see `choose_mode`) with one log line.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from torch import Tensor, nn

import kernels.adam
from fastgan import artifacts, models
from fastgan.artifacts import CheckpointError
from fastgan.config import Config, resolve
from fastgan.data import ResidentLoader
from fastgan.models import build_models
from fastgan.penalties import analytic_penalty
from fastgan.variants import VARIANTS
from fastgan.variants.base import Codes, Critic, Stats, Variant

log = logging.getLogger("fastgan")
MODES = ("eager", "compile", "graph")
GRAPH_WARMUP = 3  # eager iterations before a capture: optimizer state, autotuning, cuBLAS handles


def choose_mode(requested: str, cfg: Config, variant: Variant, device: torch.device,
                num_processes: int) -> tuple[str, str | None]:
    """The mode to run and, if it is not the one asked for, why. auto: graph on CUDA, eager otherwise.
    (A capture that fails at run time falls back to eager too: see Engine.iteration.)"""
    if requested == "auto":
        requested = "graph" if device.type == "cuda" else "eager"
    mode, why = requested, None
    if mode == "graph":
        if device.type != "cuda":
            return "eager", "graph mode needs a CUDA device"
        if num_processes > 1:
            mode, why = "compile", "graph mode runs one process (DDP's all-reduce is not captured)"
        elif cfg.mixed_precision == "fp16":
            mode, why = "compile", "fp16's loss scaler reads its overflow flag on the host every step"
    if mode == "compile" and variant.gradient_penalty and not analytic_penalty(cfg.arch, variant, device):
        # Only the analytic penalty (unconditional MLP critic, custom ops on) is traceable.
        return "eager", (why + "; " if why else "") + "torch.compile cannot trace the double backward of this critic's penalty"
    return mode, why


def optimizer(name: str, params: Iterator[nn.Parameter], lr: float, betas: tuple[float, float],
              device: torch.device) -> torch.optim.Optimizer:
    """Adam as Triton launches sized to the traffic where fastgan's kernels run (kernels.adam; torch's fused
    Adam elsewhere), or RMSprop (WGAN's, in its paper) as one multi-tensor call; capturable on CUDA
    (step counts stay on the device, so the step can live in a CUDA graph)."""
    capturable = device.type == "cuda"
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True, capturable=capturable)
    return kernels.adam.Adam(params, lr=lr, betas=betas, fused=True, capturable=capturable)


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """net with its weights out of autograd: the G step differentiates through D to the images, but
    has no use for D's weight gradients."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p in params:
            p.requires_grad_(True)


class Engine:
    def __init__(self, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 variant: Variant, accelerator: Accelerator, z_dim: int, n_critic: int,
                 G_ema: nn.Module | None = None, ema_decay: float = 0.0, mode: str = "eager",
                 compile_backend: str = "inductor"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.variant, self.accelerator = variant, accelerator
        self.z_dim, self.n_critic = z_dim, n_critic
        self.G_ema, self.ema_decay = G_ema, ema_decay
        self.mode = mode
        self.D_net = accelerator.unwrap_model(D)  # the G step calls D without DDP's all-reduce
        self.graphs: dict[bool, tuple[torch.cuda.CUDAGraph, Stats]] = {}  # with G step? -> (graph, its outputs)
        if mode == "compile":
            self.generate = torch.compile(self.generate, backend=compile_backend)
            self.d_loss = torch.compile(self.d_loss, backend=compile_backend)
            self.g_loss = torch.compile(self.g_loss, backend=compile_backend)

    def noise(self, n: int) -> Tensor:
        return models.noise(n, self.z_dim, self.accelerator.device)

    # --- the losses (what compile mode compiles) -------------------------------------------------
    def generate(self, y: Tensor, for_g_step: bool) -> tuple[Tensor, Codes]:
        """G's samples for one iteration and the codes behind them. The D step sees them detached;
        the G step, if this iteration has one, reuses them (the seed's way: one z per iteration, so
        G's forward runs once), which is why autograd records it only then."""
        latent, codes = self.variant.latent(self.noise(len(y)), y)
        with torch.set_grad_enabled(for_g_step):
            return self.G(latent), codes

    def d_loss(self, real: Tensor, fake: Tensor, y: Tensor, codes: Codes) -> tuple[Tensor, Stats]:
        return self.variant.d_loss(Critic(self.D, y), real, fake.detach(), codes)

    def g_loss(self, fake: Tensor, y: Tensor, codes: Codes) -> tuple[Tensor, Stats]:
        return self.variant.g_loss(Critic(self.D_net, y), fake, codes)

    # --- the steps ---------------------------------------------------------------------------------
    def d_step(self, real: Tensor, fake: Tensor, y: Tensor, codes: Codes) -> Stats:
        loss, stats = self.d_loss(real, fake, y, codes)
        self.opt_d.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.opt_d.step()
        if self.variant.state and self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="mean")  # state (BEGAN's k) must agree across ranks
        self.variant.after_d_step(self.D, stats)
        return {"d_loss": loss.detach(), **stats}

    def g_step(self, fake: Tensor, y: Tensor, codes: Codes) -> Stats:
        with frozen(self.D):
            loss, stats = self.g_loss(fake, y, codes)
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
        with_g = (iteration + 1) % self.n_critic == 0
        fake, codes = self.generate(y, for_g_step=with_g)
        stats = self.d_step(real, fake, y, codes)
        if with_g:
            stats |= self.g_step(fake, y, codes)
        return stats

    def iteration(self, loader: ResidentLoader, iteration: int) -> Stats:
        """The next batch at the loader's cursor, then step(); in graph mode a replay of the captured
        iteration (captured on first use). The returned tensors of a replay are the graph's own
        outputs: the next replay overwrites them."""
        if self.mode != "graph":
            real, y = loader.next_batch()
            return self.step(real, y, iteration)
        with_g = (iteration + 1) % self.n_critic == 0
        if with_g not in self.graphs:
            try:
                self.graphs[with_g] = self._capture(loader, iteration)
            except RuntimeError as e:  # CUDA refused the capture; nothing ran and the warm-ups are undone
                log.warning("--mode graph: capture failed (%s); running in eager mode", str(e).strip().splitlines()[0])
                self.mode, self.graphs = "eager", {}
                return self.iteration(loader, iteration)
        graph, stats = self.graphs[with_g]
        graph.replay()
        return stats

    # --- CUDA graphs -------------------------------------------------------------------------------
    def _capture(self, loader: ResidentLoader, iteration: int) -> tuple[torch.cuda.CUDAGraph, Stats]:
        """Capture the iteration `iteration` stands for (D only, or D+G). Capture needs warm-up
        iterations on a side stream first; they are undone, so training is not advanced."""
        def run() -> Stats:
            real, y = loader.next_batch()
            return self.step(real, y, iteration)

        # Warm-up and capture share one side stream: autograd ties each weight's gradient
        # accumulator to the stream it was created on, and a mismatch makes it sync across streams,
        # which invalidates a capture.
        side = torch.cuda.Stream()
        with self.undone(loader):
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP):
                    loader.cursor.zero_()  # batch 0: the cursor may sit near the epoch's end (it is put back)
                    run()
            torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            stats = run()
        return graph, stats

    @contextlib.contextmanager
    def undone(self, loader: ResidentLoader) -> Iterator[None]:
        """Iterations run inside this block leave no trace: weights, buffers, optimizer state (zeroed
        where the block created it: a fresh optimizer state is zeros), variant state, the loader's cursor
        and the random generators are put back."""
        cuda = self.accelerator.device.type == "cuda"
        rng = torch.cuda.get_rng_state() if cuda else torch.get_rng_state()
        with torch.no_grad():  # plain copies: a clone in autograd would tie the weights' accumulators to this stream
            before = {id(t): t.clone() for t in self._training_state(loader)}
        yield
        with torch.no_grad():
            for t in self._training_state(loader):
                if id(t) in before:
                    t.copy_(before[id(t)])
                else:
                    t.zero_()
        (torch.cuda.set_rng_state if cuda else torch.set_rng_state)(rng)

    def _training_state(self, loader: ResidentLoader) -> list[Tensor]:
        """Every tensor an iteration updates in place."""
        nets = [self.G, self.D] + ([self.G_ema] if self.G_ema is not None else [])
        tensors = [t for net in nets for t in (*net.parameters(), *net.buffers())]
        for opt in (self.opt_g, self.opt_d):
            tensors += [v for state in opt.state.values() for v in state.values() if isinstance(v, Tensor)]
        return tensors + list(self.variant.state.values()) + [loader.cursor]

    # --- reading out -------------------------------------------------------------------------------
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
        statistics). Unwrapped: only the main process draws grids, and DDP's forward would broadcast
        G's buffers to processes that are not there."""
        G = self.G_ema if self.G_ema is not None else self.accelerator.unwrap_model(self.G)
        G.eval()
        try:
            return G(latent).float()
        finally:
            if G is not self.G_ema:
                G.train()


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The saved moments and step counts under this run's hyperparameters: lr and betas as resolved
    (--resume may change them) and the flags of this device (capturable on CUDA), not the saved ones."""
    groups = [fresh | {"params": old["params"]}
              for fresh, old in zip(opt.state_dict()["param_groups"], saved["param_groups"], strict=True)]
    opt.load_state_dict(saved | {"param_groups": groups})


def build_engine(cfg: Config, accelerator: Accelerator, state: dict[str, Any] | None = None,
                 compile_backend: str = "inductor") -> Engine:
    """The variant, its networks and optimizers, restored from `state` (a checkpoint) if given,
    placed and wrapped by Accelerate, run in cfg.mode (or the mode it falls back to)."""
    variant = VARIANTS[cfg.gan](cfg)
    device = accelerator.device
    mode, why = choose_mode(cfg.mode, cfg, variant, device, accelerator.num_processes)
    if why:
        log.info("--mode %s: %s; running in %s mode", cfg.mode, why, mode)
    G, D = build_models(cfg.arch, variant, cfg.z_dim)
    opt_g = optimizer(cfg.optimizer, G.parameters(), cfg.lr_g, (cfg.beta1, cfg.beta2), device)
    opt_d = optimizer(cfg.optimizer, D.parameters(), cfg.lr_d, (cfg.beta1, cfg.beta2), device)
    if state is not None:
        try:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            load_optimizer_state(opt_g, state["opt_g"])
            load_optimizer_state(opt_d, state["opt_d"])
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
        G_ema.to(device)
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    for net in (G, D):
        if isinstance(net, nn.parallel.DistributedDataParallel):
            # No re-broadcast of BatchNorm's running statistics before every forward (start-up sync
            # kept): a BatchNorm D runs twice per loss (real, fake), and under torch 2.11 the second
            # broadcast bumped the version of buffers the first call's backward had saved (an autograd
            # error with --arch conv; 2.14 keeps the version). Training reads batch statistics; the
            # main process's buffers, the only ones used (grids, evaluation, checkpoints), are the
            # ones the broadcast copied. (2.14 names this forward_sync_buffers; both take this spelling.)
            net.broadcast_buffers = False
    variant.to(device)
    return Engine(G, D, opt_g, opt_d, variant, accelerator, cfg.z_dim, cfg.n_critic, G_ema, cfg.ema_decay,
                  mode, compile_backend)


def load_engine(target: str | Path, accelerator: Accelerator) -> tuple[Path, dict[str, Any], Engine]:
    """A trained run's engine from its newest checkpoint (a run directory or a checkpoint file):
    (the checkpoint's path, the checkpoint, the engine built from its config and state)."""
    path, checkpoint = artifacts.checkpoint_at(target)
    return path, checkpoint, build_engine(resolve({}, base=checkpoint["config"]), accelerator, checkpoint)
