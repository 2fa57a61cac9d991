"""BEGAN (Berthelot et al., 2017): an autoencoder D; k balances the real and fake reconstruction
losses toward L(G(z)) = γ·L(x), and M = L(x) + |γL(x) − L(G(z))| measures convergence."""
import torch

from fastgan.variants.base import Variant


def recon_l1(out, x):
    return (out.recon - x).abs().mean()


class BEGAN(Variant):
    name = "began"
    head = "autoencoder"
    # γ 1 (the fake reconstruction error held equal to the real one): at 0.5 G collapsed to one blob
    # on the 9k sample (1/10 digits); at 1.0, 9/10 and score 3.5 after 50 epochs.
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "gamma": 1.0, "lambda_k": 0.001, "k0": 0.0}
    stats = ("k", "M")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.state["k"] = torch.tensor(float(cfg.k0))

    def d_loss(self, D, real, fake, codes):
        out_real, out_fake = D.pair(real, fake)
        l_real, l_fake = recon_l1(out_real, real), recon_l1(out_fake, fake)
        balance = self.cfg.gamma * l_real - l_fake
        stats = {"balance": balance.detach(), "k": self.state["k"].clone(), "M": (l_real + balance.abs()).detach()}
        return l_real - self.state["k"] * l_fake, stats

    def g_loss(self, D, fake, codes):
        return recon_l1(D(fake), fake), {}

    @torch.no_grad()
    def after_d_step(self, D, stats):
        k = self.state["k"]
        k.add_(self.cfg.lambda_k * stats["balance"]).clamp_(0.0, 1.0)
