"""InfoGAN (Chen et al., 2016): G is given a categorical and continuous codes besides z; a Q head
on D recovers them, and both players minimise that reconstruction (a bound on mutual information).

Q shares D's trunk and is trained in D's step on the (detached) samples; G gets the same term in
its own step. The adversarial output is the named `score`, never a column of a packed tensor.
"""
import torch
import torch.nn.functional as F

from fastgan.models import noise
from fastgan.models.heads import N_CLASSES, one_hot
from fastgan.variants.base import Variant, gan_d_loss, gan_g_loss


class InfoGAN(Variant):
    name = "infogan"
    head = "info"
    # Equal rates: G at 1e-3 against D at 2e-4 collapsed to one digit.
    defaults = {"lr_g": 1e-3, "lr_d": 1e-3, "n_cont": 2, "info_cat_weight": 1.0, "info_cont_weight": 1.0}
    stats = ("info",)

    def code_dim(self):
        return N_CLASSES + self.cfg.n_cont

    def q_dims(self):
        return (N_CLASSES, self.cfg.n_cont)

    def codes_latent(self, z, c_cat, c_cont):
        return torch.cat([z, one_hot(c_cat, z.dtype), c_cont], dim=1)

    def latent(self, z, y):
        c_cat = torch.randint(N_CLASSES, (z.shape[0],), device=z.device)
        c_cont = noise(z.shape[0], self.cfg.n_cont, z.device)
        return self.codes_latent(z, c_cat, c_cont), {"c_cat": c_cat, "c_cont": c_cont}

    def info_loss(self, out, codes):
        cat = F.cross_entropy(out.q_cat, codes["c_cat"])
        cont = F.mse_loss(out.q_cont, codes["c_cont"])
        return self.cfg.info_cat_weight * cat + self.cfg.info_cont_weight * cont

    def d_loss(self, D, real, fake, codes):
        out_real, out_fake = D.pair(real, fake)
        info = self.info_loss(out_fake, codes)
        return gan_d_loss(out_real.score, out_fake.score) + info, {"info": info.detach()}

    def g_loss(self, D, fake, codes):
        out = D(fake)
        return gan_g_loss(out.score) + self.info_loss(out, codes), {}

    def grid_latents(self, z):
        """Columns: the categorical code; rows: noise. Then the continuous codes' sweeps of the first
        ten noise vectors, one category per row."""
        z10 = z[:N_CLASSES]
        cats = torch.arange(N_CLASSES, device=z.device)
        zeros = torch.zeros(N_CLASSES * N_CLASSES, self.cfg.n_cont, device=z.device, dtype=z.dtype)
        grid = self.codes_latent(z10.repeat_interleave(N_CLASSES, 0), cats.repeat(N_CLASSES), zeros)
        return {"": (grid, N_CLASSES), **self.code_sweeps(z10, N_CLASSES)}

    def interpolation_latents(self, z_from, z_to, steps):
        """Along each continuous code (the codes are what infoGAN makes meaningful), from z_from."""
        return self.code_sweeps(z_from, steps)

    def code_sweeps(self, z, steps):
        """Per continuous code, a grid sweeping it from −1 to 1 over `steps` columns, the others at 0;
        row r: noise z[r], category r mod 10."""
        rows = len(z)
        z_rows = z.repeat_interleave(steps, 0)
        cats = (torch.arange(rows, device=z.device) % N_CLASSES).repeat_interleave(steps)
        sweep = torch.linspace(-1, 1, steps, device=z.device, dtype=z.dtype).repeat(rows)
        grids = {}
        for j in range(self.cfg.n_cont):
            c_cont = torch.zeros(rows * steps, self.cfg.n_cont, device=z.device, dtype=z.dtype)
            c_cont[:, j] = sweep
            grids[f"cont{j + 1}"] = (self.codes_latent(z_rows, cats, c_cont), steps)
        return grids
