"""Every variant trains a few steps on the CPU with both architectures, and its hooks do their job."""
import pytest
import torch
from accelerate import Accelerator

import kernels

from fastgan.config import resolve
from fastgan.data import bundled_sample
from fastgan.engine import build_engine
from fastgan.models import ARCHS
from fastgan.variants import VARIANTS

BATCH = 8


@pytest.fixture(scope="module")
def batch():
    sample = bundled_sample("train")
    idx = torch.randperm(len(sample), generator=torch.Generator().manual_seed(0))[:BATCH]
    return sample.images[idx].unsqueeze(1).float() / 127.5 - 1, sample.labels[idx]


def engine_for(name, arch="mlp", **overrides):
    cfg = resolve({"gan": name, "arch": arch, "batch_size": BATCH, **overrides})
    return build_engine(cfg, Accelerator(cpu=True))


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(module, before):
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains(name, arch, batch):
    real, y = batch
    engine = engine_for(name, arch)
    g_before, d_before = snapshot(engine.G), snapshot(engine.D)
    stats = {}
    for it in range(engine.n_critic):  # exactly one G step, at the last iteration
        stats |= engine.step(real, y, it)
    assert {"d_loss", "g_loss"} <= stats.keys()
    for key, value in stats.items():
        assert value.dim() == 0 and torch.isfinite(value), f"{key} = {value}"
    assert changed(engine.G, g_before) and changed(engine.D, d_before)

    latent, _ = engine.variant.latent(engine.noise(BATCH), y)
    fake = engine.G(latent)
    assert fake.shape == (BATCH, 1, 28, 28) and fake.abs().max() <= 1
    out = engine.D(fake, y)
    head = engine.variant.head
    if head == "autoencoder":
        assert out.recon.shape == fake.shape and out.code.shape[0] == BATCH and out.score is None
    else:
        assert out.score.shape == (BATCH,)
        assert (out.cls is not None) == (head == "class") and (out.q_cat is not None) == (head == "info")
        if head == "class":
            assert out.cls.shape == (BATCH, 10)
        if head == "info":
            assert out.q_cat.shape == (BATCH, 10) and out.q_cont.shape == (BATCH, engine.variant.cfg.n_cont)


@pytest.mark.parametrize("name", ["wgan", "wgan_gp"])
def test_n_critic_steps_d_only_until_the_nth_iteration(name, batch):
    real, y = batch
    engine = engine_for(name, n_critic=3)
    g_before = snapshot(engine.G)
    for it in range(2):
        d_before = snapshot(engine.D)
        stats = engine.step(real, y, it)
        assert "g_loss" not in stats and changed(engine.D, d_before)
    assert not changed(engine.G, g_before)
    assert "g_loss" in engine.step(real, y, 2)
    assert changed(engine.G, g_before)


@pytest.mark.parametrize("arch", ARCHS)
def test_wgan_critic_weights_stay_clipped(arch, batch):
    real, y = batch
    engine = engine_for("wgan", arch, clip=0.02, lr_d=0.1)  # a large step pushes weights past the bound
    for it in range(3):
        engine.step(real, y, it)
        bound = max(p.abs().max().item() for p in engine.D.parameters())
        assert bound <= 0.02
    assert bound == pytest.approx(0.02)


def test_began_k_moves_and_is_checkpointed(batch):
    real, y = batch
    engine = engine_for("began", k0=0.0, lambda_k=0.01)
    engine.step(real, y, 0)
    k = engine.variant.state["k"].item()
    assert k > 0  # at the start fakes reconstruct worse than γ·L(x): balance > 0 pushes k up
    assert engine.state_dict()["variant"]["k"].item() == k


def test_gradient_penalty_critics_have_no_batchnorm():
    for name in VARIANTS:
        D = engine_for(name, "conv").D
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
        assert has_bn == (not VARIANTS[name].gradient_penalty), name


def test_conditional_grid_has_one_class_per_column():
    engine = engine_for("cgan")
    z = torch.rand(100, engine.z_dim) * 2 - 1
    (latent, nrow), = engine.variant.grid_latents(z).values()
    assert nrow == 10 and latent.shape == (100, engine.z_dim + 10)
    labels = latent[:, engine.z_dim:].argmax(1).view(10, 10)  # (row, column)
    assert torch.equal(labels, torch.arange(10).expand(10, 10))
    noise = latent[:, :engine.z_dim].view(10, 10, -1)
    assert torch.equal(noise, z[:10, None].expand(10, 10, -1))


def test_infogan_grids_sweep_each_code():
    engine = engine_for("infogan", n_cont=2)
    grids = engine.variant.grid_latents(torch.rand(100, engine.z_dim))
    assert set(grids) == {"", "cont1", "cont2"}
    latent, _ = grids["cont2"]
    codes = latent[:, engine.z_dim + 10:].view(10, 10, 2)  # (row, column, code)
    assert torch.equal(codes[:, :, 0], torch.zeros(10, 10))
    torch.testing.assert_close(codes[3, :, 1], torch.linspace(-1, 1, 10))
    assert torch.equal(latent[:, engine.z_dim:engine.z_dim + 10].argmax(1).view(10, 10)[:, 0], torch.arange(10))


def test_same_seed_same_losses(batch):
    real, y = batch

    def losses():
        torch.manual_seed(7)
        engine = engine_for("wgan_gp", n_critic=1)
        return torch.stack([engine.step(real, y, it)["d_loss"] for it in range(3)])

    assert torch.equal(losses(), losses())


@pytest.mark.parametrize("name", ["gan", "wgan_gp", "dragan"])
def test_kernel_backends_train_the_same(name, batch):
    # triton: custom ops + analytic penalty; torch: plain PyTorch + double backward.
    real, y = batch

    def losses(backend):
        kernels.set_backend(backend)
        torch.manual_seed(3)
        engine = engine_for(name, n_critic=1)
        steps = [engine.step(real, y, it) for it in range(4)]
        return torch.stack([torch.stack([s["d_loss"], s["g_loss"]]) for s in steps])

    previous = kernels.get_backend()
    try:
        fused, plain = losses("triton"), losses("torch")
    finally:
        kernels.set_backend(previous)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gan", "infogan"])
def test_one_noise_draw_and_one_g_forward_per_iteration(name, batch, monkeypatch):
    """The seed's iteration: one z (and one set of infogan codes) per iteration, the G step taking its
    loss on the very samples the D step saw, against the D just updated."""
    real, y = batch
    engine = engine_for(name)
    latents = []
    engine.G.register_forward_hook(lambda module, args, out: latents.append(args[0].detach().clone()))
    G_before = {k: v.clone() for k, v in engine.G.state_dict().items()}
    d_loss = engine.d_loss
    d_seen = []
    monkeypatch.setattr(engine, "d_loss", lambda real_, fake, y_, codes: d_seen.append(fake.detach().clone())
                        or d_loss(real_, fake, y_, codes))
    g_loss = engine.g_loss
    g_seen = []
    monkeypatch.setattr(engine, "g_loss", lambda fake, y_, codes: g_seen.append((fake.detach().clone(), codes))
                        or g_loss(fake, y_, codes))
    engine.step(real, y, 0)
    assert len(latents) == 1 and len(d_seen) == len(g_seen) == 1
    assert torch.equal(d_seen[0], g_seen[0][0])
    # and those samples are G's output for that latent, before G's update
    reference = engine_for(name)
    reference.G.load_state_dict(G_before)
    torch.testing.assert_close(reference.G(latents[0]), g_seen[0][0])
