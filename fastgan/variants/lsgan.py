"""LSGAN (Mao et al., 2017): least-squares targets 1 (real) and 0 (fake) on the raw score."""
from fastgan.variants.base import Variant


class LSGAN(Variant):
    name = "lsgan"
    defaults = {"lr_g": 1e-3, "lr_d": 1e-3}

    def d_loss(self, D, real, fake, codes):
        out_real, out_fake = D.pair(real, fake)
        return 0.5 * (out_real.score - 1).square().mean() + 0.5 * out_fake.score.square().mean(), {}

    def g_loss(self, D, fake, codes):
        return 0.5 * (D(fake).score - 1).square().mean(), {}
