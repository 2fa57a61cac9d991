"""Conditional GAN (Mirza & Osindero, 2014): G and D are both given the one-hot class label."""
from fastgan.variants.base import Variant, gan_d_loss, gan_g_loss


class CGAN(Variant):
    name = "cgan"
    conditional = True
    d_sees_label = True
    defaults = {"lr_g": 1e-3, "lr_d": 1e-3}

    def d_loss(self, D, real, fake, codes):
        out_real, out_fake = D.pair(real, fake)
        return gan_d_loss(out_real.score, out_fake.score), {}

    def g_loss(self, D, fake, codes):
        return gan_g_loss(D(fake).score), {}
