"""AC-GAN (Odena et al., 2017): G is given the label; D does not see it but must predict it for
real and generated images through an auxiliary class head."""
import torch.nn.functional as F

from fastgan.variants.base import Variant, gan_d_loss, gan_g_loss


class ACGAN(Variant):
    name = "acgan"
    head = "class"
    conditional = True
    defaults = {"lr_g": 1e-3, "lr_d": 1e-3}
    stats = ("cls",)

    def d_loss(self, D, real, fake, codes):
        y = codes["y"]  # fakes are generated for the real batch's labels
        out_real, out_fake = D.pair(real, fake)
        cls = F.cross_entropy(out_real.cls, y) + F.cross_entropy(out_fake.cls, y)
        return gan_d_loss(out_real.score, out_fake.score) + cls, {"cls": cls.detach()}

    def g_loss(self, D, fake, codes):
        out = D(fake)
        return gan_g_loss(out.score) + F.cross_entropy(out.cls, codes["y"]), {}
