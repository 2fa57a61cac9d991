"""Every variant's losses against values computed by hand on small fixed tensors."""
import math

import pytest
import torch

from fastgan.config import resolve
from fastgan.models import DOutput
from fastgan.variants import VARIANTS
from fastgan.variants.base import Critic, gan_d_loss
from fastgan.variants.ebgan import pull_away


def variant(name, **overrides):
    return VARIANTS[name](resolve({"gan": name, **overrides}))


class table:
    """A stand-in Critic that returns a fixed output for each input tensor (keyed by identity)."""

    def __init__(self, outputs):
        self.outputs = outputs

    def __call__(self, x):
        return self.outputs[id(x)]

    def pair(self, real, fake):
        return self(real), self(fake)


def softplus(v):
    return math.log1p(math.exp(v))


REAL, FAKE = torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)
S_REAL, S_FAKE = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])


def test_gan():
    D = table({id(REAL): DOutput(score=S_REAL), id(FAKE): DOutput(score=S_FAKE)})
    # BCE(s, 1) = softplus(-s), BCE(s, 0) = softplus(s), each averaged over the batch
    expected_d = (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
    expected_g = (softplus(-0.5) + softplus(3)) / 2
    v = variant("gan")
    assert v.d_loss(D, REAL, FAKE, {})[0].item() == pytest.approx(expected_d, rel=1e-6)
    assert v.g_loss(D, FAKE, {})[0].item() == pytest.approx(expected_g, rel=1e-6)


def test_lsgan():
    D = table({id(REAL): DOutput(score=S_REAL), id(FAKE): DOutput(score=S_FAKE)})
    expected_d = 0.5 * ((1 + 4) / 2) + 0.5 * ((0.25 + 9) / 2)
    expected_g = 0.5 * ((0.25 + 16) / 2)
    v = variant("lsgan")
    assert v.d_loss(D, REAL, FAKE, {})[0].item() == pytest.approx(expected_d, rel=1e-6)
    assert v.g_loss(D, FAKE, {})[0].item() == pytest.approx(expected_g, rel=1e-6)


def test_wgan():
    D = table({id(REAL): DOutput(score=S_REAL), id(FAKE): DOutput(score=S_FAKE)})
    v = variant("wgan")
    assert v.d_loss(D, REAL, FAKE, {})[0].item() == pytest.approx(-0.5 + (-1.25), rel=1e-6)  # −D(x) + D(G(z))
    assert v.g_loss(D, FAKE, {})[0].item() == pytest.approx(1.25, rel=1e-6)


def test_wgan_clips_every_weight_after_the_critic_step():
    v = variant("wgan", clip=0.05)
    D = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)
    v.after_d_step(D, {})
    values = torch.cat([p.flatten() for p in D.parameters()])
    assert values.abs().max().item() == pytest.approx(0.05)


def test_acgan_adds_class_cross_entropy():
    cls_real, cls_fake = torch.tensor([[2.0, 0.0] + [0.0] * 8] * 2), torch.zeros(2, 10)
    y = torch.tensor([0, 1])
    D = table({id(REAL): DOutput(score=S_REAL, cls=cls_real), id(FAKE): DOutput(score=S_FAKE, cls=cls_fake)})
    lse = math.log(math.exp(2) + 9)  # log-sum-exp of a row of cls_real
    ce_real = ((lse - 2) + lse) / 2
    ce_fake = math.log(10)
    gan_d = (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
    v = variant("acgan")
    loss, stats = v.d_loss(D, REAL, FAKE, {"y": y})
    assert loss.item() == pytest.approx(gan_d + ce_real + ce_fake, rel=1e-6)
    assert stats["cls"].item() == pytest.approx(ce_real + ce_fake, rel=1e-6)
    g = v.g_loss(D, FAKE, {"y": y})[0].item()
    assert g == pytest.approx((softplus(-0.5) + softplus(3)) / 2 + ce_fake, rel=1e-6)


def test_ebgan_energy_hinge_and_pull_away():
    recon_real = REAL + 0.5  # per-sample energy 0.25
    recon_fake = FAKE - torch.tensor([0.2, 2.0]).view(2, 1, 1, 1)  # energies 0.04 and 4.0
    code = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2): squared 0.5
    D = table({id(REAL): DOutput(recon=recon_real, code=code), id(FAKE): DOutput(recon=recon_fake, code=code)})
    v = variant("ebgan", margin=1.0, pt_weight=0.1)
    # hinge per sample: max(0, 1 - 0.04) = 0.96 and max(0, 1 - 4) = 0
    assert v.d_loss(D, REAL, FAKE, {})[0].item() == pytest.approx(0.25 + 0.96 / 2, rel=1e-5)
    assert v.g_loss(D, FAKE, {})[0].item() == pytest.approx((0.04 + 4.0) / 2 + 0.1 * 0.5, rel=1e-5)


def test_pull_away_normalises_each_code_by_its_own_norm():
    # Scaling one code must not change the cosine similarities (a global norm would).
    code = torch.tensor([[3.0, 4.0], [4.0, 3.0], [0.0, 1.0]])
    scaled = code * torch.tensor([[10.0], [1.0], [0.1]])
    s = torch.nn.functional.normalize(code, dim=1)
    cos = s @ s.T
    expected = (cos.square().sum() - 3) / 6
    assert pull_away(code).item() == pytest.approx(expected.item(), rel=1e-6)
    assert pull_away(scaled).item() == pytest.approx(expected.item(), rel=1e-6)


def test_began_loss_k_control_and_convergence_measure():
    v = variant("began", gamma=0.5, lambda_k=0.1, k0=0.2)
    recon_real, recon_fake = REAL + 0.4, FAKE - 0.1  # L(x) = 0.4, L(G(z)) = 0.1
    D = table({id(REAL): DOutput(recon=recon_real), id(FAKE): DOutput(recon=recon_fake)})
    loss, stats = v.d_loss(D, REAL, FAKE, {})
    assert loss.item() == pytest.approx(0.4 - 0.2 * 0.1, rel=1e-5)
    assert stats["M"].item() == pytest.approx(0.4 + abs(0.5 * 0.4 - 0.1), rel=1e-5)
    v.after_d_step(None, stats)
    assert v.state["k"].item() == pytest.approx(0.2 + 0.1 * (0.5 * 0.4 - 0.1), rel=1e-5)
    assert v.g_loss(D, FAKE, {})[0].item() == pytest.approx(0.1, rel=1e-5)


def test_began_k_stays_in_unit_interval():
    v = variant("began", gamma=1.0, lambda_k=10.0, k0=0.5)
    D = table({id(REAL): DOutput(recon=REAL + 1.0), id(FAKE): DOutput(recon=FAKE)})
    _, stats = v.d_loss(D, REAL, FAKE, {})
    v.after_d_step(None, stats)
    assert v.state["k"].item() == 1.0


def test_infogan_info_loss_reads_the_named_heads():
    v = variant("infogan", info_cat_weight=2.0, info_cont_weight=3.0)
    codes = {"c_cat": torch.tensor([1, 0]), "c_cont": torch.tensor([[0.5, -0.5], [0.0, 1.0]])}
    out_fake = DOutput(score=S_FAKE, q_cat=torch.zeros(2, 10), q_cont=torch.zeros(2, 2))
    D = table({id(REAL): DOutput(score=S_REAL), id(FAKE): out_fake})
    info = 2.0 * math.log(10) + 3.0 * (0.25 + 0.25 + 0 + 1) / 4
    gan_d = (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
    loss, stats = v.d_loss(D, REAL, FAKE, codes)
    assert loss.item() == pytest.approx(gan_d + info, rel=1e-6)
    assert v.g_loss(D, FAKE, codes)[0].item() == pytest.approx((softplus(-0.5) + softplus(3)) / 2 + info, rel=1e-6)


class LinearCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(784, 1)

    def forward(self, x, y=None):
        return DOutput(score=self.lin(x.flatten(1)).squeeze(1))


@pytest.mark.parametrize("name", ["wgan_gp", "dragan"])
def test_penalised_d_loss_is_base_loss_plus_weighted_penalty(name):
    torch.manual_seed(1)
    net = LinearCritic()
    D = Critic(net)
    real, fake = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    v = variant(name, gp_weight=3.0)
    loss, stats = v.d_loss(D, real, fake, {})
    # A linear critic's input gradient is its weight row everywhere: the penalty is known exactly.
    gp = 3.0 * (net.lin.weight.norm() - 1).square()
    s_real, s_fake = D(real).score, D(fake).score
    base = s_fake.mean() - s_real.mean() if name == "wgan_gp" else gan_d_loss(s_real, s_fake)
    assert stats["gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    assert loss.item() == pytest.approx((base + gp).item(), rel=1e-5)


@pytest.mark.parametrize("name, arch", [("cgan", "mlp"), ("acgan", "mlp"), ("infogan", "mlp"), ("ebgan", "mlp"),
                                        ("gan", "conv")])
def test_pair_gives_what_two_calls_give(name, arch):
    """Critic.pair runs one forward over real and fake for a per-sample network (labels repeated for
    a conditional D; every head split back), and two forwards for a BatchNorm one, whose batch
    statistics a joint call would mix (the conv D here: its output would change)."""
    from fastgan.models import build_models

    torch.manual_seed(0)
    v = variant(name)
    _, net = build_models(arch, v, 96)
    net.double()
    real, fake = torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.rand(6, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(10, (6,))
    D = Critic(net, y)
    for joint, alone in zip(D.pair(real, fake), (D(real), D(fake))):
        for a, b in zip(joint, alone):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
