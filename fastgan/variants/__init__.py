"""The registry: variant name -> class. A new variant is one module and one entry here."""
from fastgan.variants.acgan import ACGAN
from fastgan.variants.base import Variant
from fastgan.variants.began import BEGAN
from fastgan.variants.cgan import CGAN
from fastgan.variants.dragan import DRAGAN
from fastgan.variants.ebgan import EBGAN
from fastgan.variants.gan import GAN
from fastgan.variants.infogan import InfoGAN
from fastgan.variants.lsgan import LSGAN
from fastgan.variants.wgan import WGAN
from fastgan.variants.wgan_gp import WGAN_GP

VARIANTS: dict[str, type[Variant]] = {
    v.name: v for v in (GAN, LSGAN, WGAN, WGAN_GP, DRAGAN, CGAN, ACGAN, EBGAN, BEGAN, InfoGAN)
}

__all__ = ["VARIANTS", "Variant"]
