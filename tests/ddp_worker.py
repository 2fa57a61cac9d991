"""Run K training steps of one variant on fixed data with fixed randomness, on one process or as one
rank of several, and save the weights: data parallelism must give what one process gives with the
global batch. Usage: [torchrun --nproc_per_node N] ddp_worker.py GAN BACKEND GLOBAL_BATCH STEPS OUT_PREFIX
"""
import sys

import torch
from accelerate import Accelerator

import kernels
from fastgan import penalties
from fastgan.config import resolve
from fastgan.data import bundled_sample
from fastgan.engine import build_engine
from fastgan.models import noise

gan, backend, global_batch, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# float64 throughout: the all-reduce sums in another order than one process does, and in float32 that
# can flip the sign of a near-zero gradient, which Adam turns into a full-size step.
torch.set_default_dtype(torch.float64)
kernels.set_backend(backend)
accelerator = Accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
batch = global_batch // world
torch.manual_seed(0)
engine = build_engine(resolve({"gan": gan, "batch_size": batch, "n_critic": 1}), accelerator)


def rank_slice(t):
    return t[rank * batch:(rank + 1) * batch]


draws = iter(range(10**6))  # every process draws the same global tensors in the same order


def global_noise(n):
    g = torch.Generator().manual_seed(next(draws))
    return rank_slice(noise(global_batch, engine.z_dim, generator=g))


def global_uniform(x):
    g = torch.Generator().manual_seed(10_000 + next(draws))
    return rank_slice(torch.rand(global_batch, *(1,) * (x.dim() - 1), generator=g))


engine.noise = global_noise
penalties._per_sample_uniform = global_uniform
sample = bundled_sample("train")
images, labels = sample.images[:global_batch * steps].unsqueeze(1).double() / 127.5 - 1, sample.labels[:global_batch * steps]
for step in range(steps):
    real, y = images[step * global_batch:(step + 1) * global_batch], labels[step * global_batch:(step + 1) * global_batch]
    engine.step(rank_slice(real), rank_slice(y), step)
torch.save({"state": engine.state_dict(), "k": engine.variant.state.get("k")}, f"{out}.rank{rank}.pt")
accelerator.end_training()
