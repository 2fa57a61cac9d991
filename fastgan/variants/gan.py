"""GAN (Goodfellow et al., 2014) with the non-saturating generator loss."""
from fastgan.variants.base import Variant, gan_d_loss, gan_g_loss


class GAN(Variant):
    name = "gan"
    defaults = {"lr_g": 1e-3, "lr_d": 1e-3}  # the seed's MLP setting (CS231n): digits within an epoch

    def d_loss(self, D, real, fake, codes):
        out_real, out_fake = D.pair(real, fake)
        return gan_d_loss(out_real.score, out_fake.score), {}

    def g_loss(self, D, fake, codes):
        return gan_g_loss(D(fake).score), {}
